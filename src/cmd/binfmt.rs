//! `rbuild binfmt`: the emulated architectures (binfmt_misc handlers); `--install` registers
//! Debian's qemu-user-static interpreters with the F flag, as `tonistiigi/binfmt --install` does.

use std::path::Path;

use anyhow::{bail, Result};
use runner::binfmt::{self, Registered, BINFMT_DIR};

pub(crate) fn binfmt(install: bool, archs: &[String]) -> Result<()> {
    let dir = Path::new(BINFMT_DIR);
    if install {
        if archs.is_empty() {
            bail!(
                "rbuild binfmt --install: name the architectures (e.g. arm64 arm), or all ({})",
                binfmt::known_architectures().join(" ")
            );
        }
        let wanted: Vec<String> = if archs.iter().any(|a| a == "all") {
            binfmt::known_architectures()
                .into_iter()
                .filter(|a| !binfmt::runs_natively(a))
                .map(str::to_owned)
                .collect()
        } else {
            archs.to_vec()
        };
        for arch in &wanted {
            match binfmt::register(dir, arch)? {
                Registered::Added { name, interpreter } => {
                    println!(
                        "installed {arch}: {name} -> {} (flags F)",
                        interpreter.display()
                    )
                }
                Registered::Present { name } => println!("{arch}: already registered ({name})"),
            }
        }
        return Ok(());
    }
    if !dir.join("register").exists() {
        println!(
            "binfmt_misc is not mounted on {BINFMT_DIR} (`rbuild binfmt --install ARCH` mounts it)"
        );
    }
    print!("{}", binfmt::describe(&binfmt::handlers(dir)?));
    Ok(())
}
