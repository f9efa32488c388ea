//! Renders berth-agent's man pages from its command line (`src/cli.rs`) at
//! build time, as clap_mangen suggests, into `OUT_DIR`, with
//! `man_pages.rs` listing them for `main.rs` to include: `berth-agent man
//! DIR` writes the same pages, and the agent binary carries their text but
//! no roff renderer (about 40 KB less).

use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::CommandFactory as _;

#[path = "src/cli.rs"]
mod cli;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo::rerun-if-changed=src/cli.rs");
    println!("cargo::rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("cargo sets OUT_DIR for build scripts")?);
    let mut index = String::from("const MAN_PAGES: &[(&str, &[u8])] = &[\n");
    for (name, text) in berth_core::manpages::render(cli::Cli::command())? {
        std::fs::write(out.join(&name), text)?;
        writeln!(
            index,
            "    ({name:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}\"))),"
        )?;
    }
    index.push_str("];\n");
    std::fs::write(out.join("man_pages.rs"), index)?;
    Ok(())
}
