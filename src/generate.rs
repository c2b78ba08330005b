//! Shell completions and the man page, generated from the command line's
//! definition so that they can never disagree with it.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, &name, &mut script);
    if shell == clap_complete::Shell::Bash {
        script = fix_bash_hyphenated_name(&name, &String::from_utf8_lossy(&script)).into_bytes();
    }
    out.write_all(&script)
}

/// clap_complete's bash script spells the state of a hyphenated binary's
/// subcommands two ways (`registry__gc__subcmd__gc` in the loop that finds the
/// subcommand, `registry__subcmd__gc__subcmd__gc` in the arms that complete it),
/// so nothing after a subcommand ever completes (clap-rs/clap#6421). The arms
/// are respelled the way the loop spells them.
fn fix_bash_hyphenated_name(name: &str, script: &str) -> String {
    let loop_spelling = name.replace('-', "__");
    let arm_spelling = name.replace('-', "__subcmd__");
    if loop_spelling == arm_spelling {
        return script.to_string();
    }
    script.replace(
        &format!("{arm_spelling}__subcmd__"),
        &format!("{loop_spelling}__subcmd__"),
    )
}

/// Writes the man page (roff, section 1): the top-level page, then each
/// command's options under its own heading ("GC OPTIONS"), then exit codes and
/// notes, so that one page documents every flag.
pub fn man(out: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = Cli::command();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| s.get_arguments().any(|a| !a.is_global_set()))
    {
        // clap takes headings as &'static str (without its `string` feature); one
        // short string per command, once per process
        let heading: &'static str =
            Box::leak(format!("{} options", sub.get_name()).into_boxed_str());
        let sub = sub.clone().mut_args(|a| {
            if a.is_global_set() {
                a.hide(true)
            } else {
                a.help_heading(heading)
            }
        });
        clap_mangen::Man::new(sub).render_options_section(out)?;
    }
    man.render_extra_section(out)?;
    man.render_version_section(out)
}
