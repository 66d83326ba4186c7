//! `--load` (and `-o type=docker` without `dest`): the image goes to a Docker engine through the Engine
//! API's `POST /images/load`, as a docker archive streamed in the request body (chunked; no temp file).
//! The engine is the one `DOCKER_HOST` names (`unix://PATH`) or the default socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::{write_layout, Image, TarSink};

/// The engine's socket: `DOCKER_HOST` (`unix://PATH` only) or `/var/run/docker.sock`.
fn socket() -> Result<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => match h.strip_prefix("unix://") {
            Some(p) => Ok(PathBuf::from(p)),
            None => bail!("DOCKER_HOST={h}: only unix:// engines are supported by --load"),
        },
        _ => Ok(PathBuf::from("/var/run/docker.sock")),
    }
}

/// A writer sending HTTP/1.1 chunks.
struct Chunked<W: Write>(W);

impl<W: Write> Write for Chunked<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !buf.is_empty() {
            write!(self.0, "{:x}\r\n", buf.len())?;
            self.0.write_all(buf)?;
            self.0.write_all(b"\r\n")?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Streams `image` (named `names`) to the engine and returns what it answered (`Loaded image: app:1`).
pub fn load_into_engine(store: &cache::Store, image: &Image, names: &[String]) -> Result<String> {
    let path = socket()?;
    let stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "no Docker engine answers at {} (set DOCKER_HOST=unix://PATH)",
            path.display()
        )
    })?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &stream);
    // quiet=1: the engine answers once, at the end, so it never waits on us while we still write.
    w.write_all(
        b"POST /images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    {
        let mut body = Chunked(&mut w);
        let mut sink = TarSink::new(&mut body);
        write_layout(&mut sink, store, &[(image, names)], true)?;
        sink.finish()?;
    }
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
        .with_context(|| format!("sending the image to the engine at {}", path.display()))?;
    drop(w);
    let mut r = BufReader::new(&stream);
    let mut status = String::new();
    r.read_line(&mut status)
        .context("reading the engine's answer")?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("the engine answered {status:?}, not HTTP"))?;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        let l = line.to_ascii_lowercase();
        chunked |= l.starts_with("transfer-encoding:") && l.contains("chunked");
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| anyhow!("bad chunk size {size:?} in the engine's answer"))?;
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    let text = String::from_utf8_lossy(&body);
    // The answer is JSON messages: {"stream": "..."} or {"errorDetail": ..., "error": "..."}.
    let mut said = String::new();
    for v in serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>() {
        let Ok(v) = v else { break };
        if let Some(e) = v["error"].as_str().or(v["message"].as_str()) {
            bail!("the Docker engine refused the image: {e}");
        }
        if let Some(s) = v["stream"].as_str() {
            said.push_str(s);
        }
    }
    if code != 200 {
        bail!("the Docker engine answered {code}: {}", text.trim());
    }
    Ok(said.trim().to_owned())
}
