//! `berthctl completions SHELL` and `berthctl man DIR`: shell completion
//! scripts (clap_complete) and man pages (clap_mangen, through
//! `berth_core::manpages`) of berthctl's own command line, which `main`
//! hands in. The packages install both (packaging/build.sh makes them).

use std::path::PathBuf;

use anyhow::Context as _;

use crate::output::Sink;

/// Print a shell completion script for berthctl.
///
/// bash: `berthctl completions bash > ~/.local/share/bash-completion/completions/berthctl`;
/// zsh: into a directory on $fpath as `_berthctl`; fish:
/// `~/.config/fish/completions/berthctl.fish`. The .deb and .rpm install
/// all three where the shells look.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell.
    shell: Shell,
}

/// The shells berthctl completes in.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Write the man pages of berthctl and each of its subcommands
/// (berthctl.1, berthctl-events.1, ...) into DIR.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Where to write them (created if missing).
    dir: PathBuf,
}

/// Runs `berthctl completions`.
pub fn run(mut cmd: clap::Command, out: &Sink, args: Args) -> anyhow::Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    let script = String::from_utf8(script).context("the completion script is not UTF-8")?;
    out.text(&script)?;
    Ok(())
}

/// Runs `berthctl man` (and `berth-agent man`, with its own command).
pub fn write_man_pages(cmd: clap::Command, dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for (name, text) in berth_core::manpages::render(cmd).context("cannot render the man pages")? {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Runs `berthctl man`.
pub fn man(cmd: clap::Command, out: &Sink, args: ManArgs) -> anyhow::Result<()> {
    for path in write_man_pages(cmd, &args.dir)? {
        out.out(&path.display().to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::console::capture::console;

    fn cli() -> clap::Command {
        clap::Command::new("berthctl").subcommand(clap::Command::new("events").arg(clap::arg!(--since <D>)))
    }

    #[test]
    fn each_shell_gets_a_script_naming_the_subcommands() {
        for (shell, marker) in [
            (Shell::Bash, "complete -F"),
            (Shell::Zsh, "#compdef berthctl"),
            (Shell::Fish, "complete -c berthctl"),
        ] {
            let (c, out, _) = console(false);
            run(cli(), &Sink::new(c), Args { shell }).expect("script");
            let script = out.written();
            assert!(
                script.contains(marker) && script.contains("events"),
                "{shell:?}: {script}"
            );
        }
    }

    #[test]
    fn man_pages_are_written_per_subcommand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write_man_pages(cli(), dir.path()).expect("pages");
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["berthctl.1", "berthctl-events.1"]);
        let page = std::fs::read_to_string(&written[1]).expect("read");
        assert!(page.contains("since"), "{page}");
    }
}
