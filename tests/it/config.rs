//! Configuration mistakes stop start-up with an error naming the key (and the accepted range),
//! instead of being ignored or clamped. The binary exits before it opens a database.

use std::process::Command;

/// Runs `saga-orchestrator [args] serve` with `env`; answers its exit code and stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_saga-orchestrator"));
    cmd.args(args)
        .arg("serve")
        .env("SAGA__SERVER__BIND", "127.0.0.1:0")
        .env("SAGA__DATABASE__URL", "sqlite::memory:");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_key_in_the_environment_is_named() {
    let (code, err) = run(&[], &[("SAGA__SERVER__BINDX", "127.0.0.1:1")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("unknown setting server.bindx") && err.contains("SAGA__SERVER__BINDX"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_or_section_in_the_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[participant]\nmax_atempts = 3\n\n[databse]\nurl = \"x\"\n",
    )
    .unwrap();
    let (code, err) = run(&["--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("participant.max_atempts"), "{err}");
    assert!(err.contains("unknown setting databse"), "{err}");
}

#[test]
fn out_of_range_values_name_the_key_and_the_range() {
    let (code, err) = run(
        &[],
        &[
            ("SAGA__PARTICIPANT__MAX_ATTEMPTS", "0"),
            ("SAGA__PARTICIPANT__MULTIPLIER", "0.5"),
            ("SAGA__PARTICIPANT__CA_FILE", "/nonexistent/ca.pem"),
            ("SAGA__RETENTION__SWEEP_RATE", "0"),
            ("SAGA__TRACING__OTLP_ENDPOINT", "grpc://collector:4317"),
            ("SAGA__TRACING__SAMPLE_RATIO", "1.5"),
            ("SAGA__TRACING__TRACE_URL", "https://tempo.example/trace/"),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    for want in [
        "retention.sweep_rate must be from 1 to 1000000 (got 0)",
        "participant.max_attempts must be from 1 to 1000 (got 0)",
        "participant.multiplier must be from 1.0 to 100.0 (got 0.5)",
        "participant.ca_file",
        "tracing.otlp_endpoint must be \"\" or an http(s) URL",
        "tracing.sample_ratio must be from 0 to 1 (got 1.5)",
        "tracing.trace_url must be \"\" or an http(s) URL with {trace_id} in it",
    ] {
        assert!(err.contains(want), "{want:?} missing in {err}");
    }
}

#[test]
fn a_value_of_the_wrong_type_is_named() {
    let (code, err) = run(&[], &[("SAGA__SERVER__WORKERS", "many")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("server.workers"), "{err}");
}
