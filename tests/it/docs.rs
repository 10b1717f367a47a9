//! Documentation that must match the code: the configuration reference is the binary's own help.

#[test]
fn configuration_reference_matches_the_help_output() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).expect("doc");
    for args in [&["start", "--help"][..], &["server", "--help"], &["worker", "--help"], &["--help"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrostack"))
            .args(args)
            .env_clear()
            .env("COLUMNS", "120")
            .output()
            .expect("run ferrostack");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            doc.contains(help.trim_end()),
            "docs/configuration.md is stale for `ferrostack {}`: run scripts/gen-config-docs.sh",
            args.join(" ")
        );
    }
}
