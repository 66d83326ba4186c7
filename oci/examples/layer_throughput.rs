//! Layer export throughput: writes DIR as a layer (tar + compression + both digests) to nowhere, for gzip
//! and zstd on 1 and all cores, and prints MB/s of file data. bench/export.sh compares it with pigz and zstd.
//!
//!     cargo run --release -p oci --example layer_throughput -- DIR
//!     LEVELS=1,6,9 cargo run --release -p oci --example layer_throughput -- DIR   # gzip at these levels

#![allow(clippy::print_stdout)]

use std::time::Instant;

use oci::{Compression, LayerOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .ok_or("usage: layer_throughput DIR")?;
    let dir = std::path::PathBuf::from(dir);
    let bytes: u64 = walkdir::WalkDir::new(&dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let levels: Vec<Option<u32>> = match std::env::var("LEVELS") {
        Ok(v) => v.split(',').map(|l| l.trim().parse().ok()).collect(),
        Err(_) => vec![None],
    };
    println!("| compression | level | threads | seconds | MB/s | output MB |");
    println!("|---|---:|---:|---:|---:|---:|");
    let runs = levels
        .iter()
        .map(|l| (Compression::Gzip, *l))
        .chain([(Compression::Zstd, None)]);
    for (compression, level) in runs {
        for threads in [1, cores] {
            let opts = LayerOptions {
                compression,
                level,
                source_date_epoch: None,
                threads: Some(threads),
            };
            let t = Instant::now();
            let info = oci::write_layer(&dir, std::io::sink(), &opts)?;
            let secs = t.elapsed().as_secs_f64();
            #[allow(clippy::cast_precision_loss)]
            let (mb, out) = (bytes as f64 / 1e6, info.size as f64 / 1e6);
            println!(
                "| {compression:?} | {} | {threads} | {secs:.2} | {:.0} | {out:.0} |",
                level.map_or_else(|| "default".to_owned(), |l| l.to_string()),
                mb / secs
            );
        }
    }
    Ok(())
}
