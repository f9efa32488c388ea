//! Man pages of a clap command, for `berthctl man` and `berth-agent man`
//! (packaging/build.sh installs them in section 1).
//!
//! Pure: renders roff text, one page for the command and one for each of
//! its visible subcommands at any depth (`berthctl-env-set.1`, as git
//! names its pages); the caller writes the files.

/// The pages of `cmd`: (file name, roff text), the command's own first.
pub fn render(cmd: clap::Command) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = cmd;
    // Builds subcommands' names and the inherited global arguments.
    cmd.build();
    let mut pages = Vec::new();
    add(&cmd, cmd.get_name().to_owned(), &mut pages)?;
    Ok(pages)
}

fn add(cmd: &clap::Command, name: String, pages: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
    let mut text = Vec::new();
    let page = cmd.clone().display_name(name.clone());
    clap_mangen::Man::new(page).render(&mut text)?;
    pages.push((format!("{name}.1"), text));
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        add(sub, format!("{name}-{}", sub.get_name()), pages)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_subcommand_gets_a_page() {
        let cmd = clap::Command::new("tool")
            .about("Does things.")
            .subcommand(clap::Command::new("env").subcommand(clap::Command::new("set").about("Sets.")))
            .subcommand(clap::Command::new("secret").hide(true));
        let pages = render(cmd).expect("render");
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["tool.1", "tool-env.1", "tool-env-set.1"]);
        let set = String::from_utf8_lossy(&pages[2].1);
        assert!(set.contains(".TH tool-env-set 1") && set.contains("Sets."), "{set}");
    }
}
