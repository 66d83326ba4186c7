//! Images by the names users type: a tag (`app:1`, `reg.example/app:1`), `name@sha256:…` (a manifest the
//! store holds), or an image ID (`sha256:…` or a hex prefix of at least 4 digits of the config or
//! manifest digest, as `docker images` shows). [`Store::tag_image`] and [`Store::untag`] are `docker tag`
//! and `docker rmi`: they change tags only; blobs no tag reaches any more are left for [`Store::prune`].

use oci::{media_type, Descriptor, Digest, Manifest, Reference};

use rustix::fs::FlockOperation;

use crate::{Error, LockGuard, Store};

impl Store {
    /// The manifest descriptor `image` names (see the module docs), or [`Error::UnknownImage`].
    pub fn find_image(&self, image: &str) -> Result<Descriptor, Error> {
        let unknown = || Error::UnknownImage {
            name: image.to_owned(),
        };
        if let Some(prefix) = id_prefix(image) {
            let mut found: Option<Descriptor> = None;
            for (_, d) in self.list_tags()? {
                let config = self.manifest_of(&d).ok().map(|m| m.config.digest);
                let hit = d.digest.hex().starts_with(prefix)
                    || config.is_some_and(|c| c.hex().starts_with(prefix));
                match &found {
                    _ if !hit => {}
                    Some(f) if f.digest != d.digest => {
                        return Err(Error::AmbiguousImage {
                            name: image.to_owned(),
                        })
                    }
                    _ => found = Some(d),
                }
            }
            if let Some(d) = found {
                return Ok(d);
            }
            // A full digest may name an untagged manifest.
            if let Ok(digest) = image.parse::<Digest>() {
                return self.untagged_manifest(&digest)?.ok_or_else(unknown);
            }
            return Err(unknown());
        }
        let reference: Reference = parse(image)?;
        if let Some(digest) = &reference.digest {
            return self.untagged_manifest(digest)?.ok_or_else(unknown);
        }
        self.resolve_tag(&reference.familiar())?.ok_or_else(unknown)
    }

    /// Tags the image `source` names as `target` too (`docker tag`); returns its descriptor.
    pub fn tag_image(&self, source: &str, target: &str) -> Result<Descriptor, Error> {
        let desc = self.find_image(source)?;
        let reference = parse(target)?;
        if reference.digest.is_some() {
            return Err(Error::BadReference {
                name: target.to_owned(),
                reason: "a tag cannot contain a digest".to_owned(),
            });
        }
        self.set_tag(&reference.familiar(), &desc)?;
        Ok(desc)
    }

    /// Removes the tag `image` names or, for an image ID or digest, every tag of that image (`docker
    /// rmi`); returns the names removed. The blobs stay until pruned.
    pub fn untag(&self, image: &str) -> Result<Vec<String>, Error> {
        let unknown = || Error::UnknownImage {
            name: image.to_owned(),
        };
        let by_id = id_prefix(image).is_some() || parse(image)?.digest.is_some();
        let names: Vec<String> = if by_id {
            let desc = self.find_image(image)?;
            self.list_tags()?
                .into_iter()
                .filter(|(_, d)| d.digest == desc.digest)
                .map(|(n, _)| n)
                .collect()
        } else {
            vec![parse(image)?.familiar()]
        };
        let mut removed = Vec::new();
        for name in names {
            // Held while the tag goes: a command that starts using the image now waits for it.
            let Some(_in_use) = self.try_lock(&in_use_lock(&name))? else {
                return Err(Error::ImageInUse { name });
            };
            if self.remove_tag(&name)? {
                removed.push(name);
            }
        }
        if removed.is_empty() {
            return Err(unknown());
        }
        Ok(removed)
    }

    /// A shared lock on tag `name` for as long as a build or `rbuild run` uses the image it names: while
    /// one is held, [`Store::untag`] refuses to remove the tag.
    pub fn use_image(&self, name: &str) -> Result<LockGuard, Error> {
        self.lock_with(&in_use_lock(name), FlockOperation::LockShared)
            .map(|g| g.expect("blocking flock always returns the lock"))
    }

    /// The manifest a descriptor points at.
    pub fn manifest_of(&self, desc: &Descriptor) -> Result<Manifest, Error> {
        serde_json::from_slice(&self.read_blob(&desc.digest)?).map_err(|source| Error::Json {
            what: format!("manifest {}", desc.digest),
            source,
        })
    }

    /// A descriptor for manifest blob `digest` when the store has it (tagged or not).
    fn untagged_manifest(&self, digest: &Digest) -> Result<Option<Descriptor>, Error> {
        if let Some((_, d)) = self
            .list_tags()?
            .into_iter()
            .find(|(_, d)| d.digest == *digest)
        {
            return Ok(Some(d));
        }
        if !self.has_blob(digest) {
            return Ok(None);
        }
        let bytes = self.read_blob(digest)?;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Ok(None);
        };
        let mt = v["mediaType"]
            .as_str()
            .unwrap_or(media_type::OCI_MANIFEST)
            .to_owned();
        if !(media_type::is_manifest(&mt) || media_type::is_index(&mt)) {
            return Ok(None);
        }
        Ok(Some(Descriptor::new(
            &mt,
            digest.clone(),
            bytes.len() as u64,
        )))
    }
}

fn in_use_lock(name: &str) -> String {
    format!("image-in-use:{name}")
}

/// The hex part of an image ID (`sha256:HEX` or a bare hex prefix of 4 to 64 digits), if `s` is one.
fn id_prefix(s: &str) -> Option<&str> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    let is_hex = hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    // A bare name like `cafe` is also a valid repository: a tag of that name wins (checked by the
    // caller's fallthrough only for full IDs), so bare prefixes need 12 digits as docker shows them.
    let long_enough = if s.starts_with("sha256:") {
        hex.len() >= 4
    } else {
        hex.len() >= 12
    };
    (is_hex && long_enough && hex.len() <= 64).then_some(hex)
}

fn parse(name: &str) -> Result<Reference, Error> {
    name.parse()
        .map_err(|e: oci::ReferenceParseError| Error::BadReference {
            name: name.to_owned(),
            reason: e.to_string(),
        })
}

impl Store {
    /// The tags of repository `name` (`app`, `reg.example/team/app`; as `docker push --all-tags`), sorted.
    pub fn repository_tags(&self, name: &str) -> Result<Vec<String>, Error> {
        let repo = parse(name)?;
        if repo
            .tag
            .as_deref()
            .is_some_and(|t| name.ends_with(&format!(":{t}")))
            || repo.digest.is_some()
        {
            return Err(Error::BadReference {
                name: name.to_owned(),
                reason: "--all-tags takes a repository, without a tag or digest".to_owned(),
            });
        }
        Ok(self
            .list_tags()?
            .into_iter()
            .filter_map(|(n, _)| {
                let r: Reference = n.parse().ok()?;
                (r.registry == repo.registry && r.repository == repo.repository).then_some(n)
            })
            .collect())
    }

    /// How many images the tags name and the bytes of the blobs they reach (each blob once).
    pub fn image_usage(&self) -> Result<(u64, u64), Error> {
        let mut images = std::collections::HashSet::new();
        let mut blobs = std::collections::HashMap::new();
        for (_, d) in self.list_tags()? {
            if !images.insert(d.digest.clone()) {
                continue;
            }
            blobs.insert(d.digest.clone(), d.size);
            if let Ok(m) = self.manifest_of(&d) {
                for b in std::iter::once(&m.config).chain(&m.layers) {
                    blobs.insert(b.digest.clone(), b.size);
                }
            }
        }
        Ok((images.len() as u64, blobs.values().sum()))
    }
}
