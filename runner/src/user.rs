//! Resolution of a Docker `USER` string against the container's `/etc/passwd` and `/etc/group`.

/// The ids a command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Supplementary groups, from the `/etc/group` entries that list the user by name.
    pub(crate) groups: Vec<u32>,
    /// Home directory from `/etc/passwd`, if the user has an entry.
    pub(crate) home: Option<String>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: fields[0],
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: fields.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_entries(group: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    group.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 3 || line.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: fields[0],
            gid: fields[2].parse().ok()?,
            members: fields
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// Resolves `user` (`""`, `uid`, `uid:gid`, `name`, `name:group`, …) like Docker does.
///
/// A numeric user needs no passwd entry; a name must have one. Without a group part the
/// primary group is the passwd entry's (or 0). Errors are user-facing messages.
pub(crate) fn resolve(user: &str, passwd: &str, group: &str) -> Result<Identity, String> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    // `root` is uid 0 even without a passwd entry for it (an image FROM scratch): BuildKit's
    // `parseUID` maps the name `root` to 0 (executor/oci/user.go), so `USER root:root` runs there
    // without /etc/passwd. Plain `USER root` still fails in BuildKit (lab: "unable to find user
    // root"); we run it as 0:0, the only thing it can mean. See: #17 (item 4)
    let user_part = if user_part == "root" && !passwd_entries(passwd).any(|e| e.name == "root") {
        "0"
    } else {
        user_part
    };
    let group_part = match group_part {
        Some("root") if !group_entries(group).any(|e| e.name == "root") => Some("0"),
        other => other,
    };
    let entry = if let Ok(uid) = user_part.parse::<u32>() {
        passwd_entries(passwd).find(|e| e.uid == uid)
    } else {
        Some(
            passwd_entries(passwd)
                .find(|e| e.name == user_part)
                .ok_or_else(|| {
                    format!("unable to find user {user_part}: no matching entries in passwd file")
                })?,
        )
    };
    let uid = user_part
        .parse::<u32>()
        .ok()
        .or(entry.as_ref().map(|e| e.uid))
        .expect("a non-numeric user always has a passwd entry here");
    let gid = match group_part {
        None | Some("") => entry.as_ref().map_or(0, |e| e.gid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        },
    };
    let mut groups = Vec::new();
    if let Some(e) = &entry {
        for g in group_entries(group) {
            if g.members.contains(&e.name) && !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        home: entry.map(|e| e.home.to_owned()).filter(|h| !h.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          app:x:1000:1001:App:/home/app:/bin/sh\n\
                          # comment\n\
                          nohome:x:1002:1002::\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\napp:x:1001:\nstaff:x:50:app\n";

    /// #17 item 4: an image without /etc/passwd (FROM scratch) still knows `root`.
    #[test]
    fn root_without_passwd_entry_is_uid_0() {
        for spec in ["root", "root:root", "root:0", "0:root"] {
            let id = resolve(spec, "", "").unwrap();
            assert_eq!((id.uid, id.gid), (0, 0), "{spec}");
        }
        assert!(resolve("app", "", "").is_err());
        // An entry named root wins, whatever its ids.
        let id = resolve("root", "root:x:7:8::/r:/bin/sh\n", "").unwrap();
        assert_eq!((id.uid, id.gid), (7, 8));
    }

    #[test]
    fn root_by_default() {
        let id = resolve("", PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid), (0, 0));
        assert_eq!(id.groups, vec![10]);
        assert_eq!(id.home.as_deref(), Some("/root"));
    }

    #[test]
    fn name_uses_passwd_gid_and_member_groups() {
        let id = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1001));
        assert_eq!(id.groups, vec![10, 50]);
    }

    #[test]
    fn numeric_without_entry() {
        let id = resolve("4242:77", PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid), (4242, 77));
        assert!(id.groups.is_empty());
        assert_eq!(id.home, None);
    }

    #[test]
    fn name_and_group_name() {
        let id = resolve("app:staff", PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid), (1000, 50));
    }

    #[test]
    fn unknown_names_fail() {
        assert!(resolve("nobody", PASSWD, GROUP)
            .unwrap_err()
            .contains("nobody"));
        assert!(resolve("app:nogroup", PASSWD, GROUP)
            .unwrap_err()
            .contains("nogroup"));
    }

    #[test]
    fn empty_home_is_none() {
        assert_eq!(resolve("nohome", PASSWD, GROUP).unwrap().home, None);
    }
}
