//! Timed stages and the totals of the test runs.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::tools::Workspace;

/// Runs named stages, printing each one's start and wall time.
pub struct Stages {
    started: Instant,
    times: Vec<(String, Duration, bool)>,
}

/// Sums of the `test result:` lines that cargo's test harness and `wasm-bindgen-test-runner` print.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestTotals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Stages {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            times: Vec::new(),
        }
    }

    /// Runs one stage; its error stops the command.
    pub fn run(&mut self, name: &str, stage: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
        println!("\nxtask: == {name} ==");
        let start = Instant::now();
        let result = stage();
        let elapsed = start.elapsed();
        println!(
            "xtask: {name}: {} ({:.1} s)",
            if result.is_ok() { "ok" } else { "FAILED" },
            elapsed.as_secs_f64()
        );
        self.times.push((name.to_string(), elapsed, result.is_ok()));
        result.map_err(|error| format!("{name}: {error}"))
    }

    /// Runs `cargo <args>` as a test stage: output goes through to the terminal, `test result:` lines
    /// are added to `totals`, and a failing stage is recorded in `failures` without stopping the others.
    pub fn run_tests(
        &mut self,
        name: &str,
        workspace: &Workspace,
        args: &[&str],
        totals: &mut TestTotals,
        failures: &mut Vec<String>,
    ) {
        let result = self.run(name, || {
            let mut child = workspace
                .command("cargo")
                .args(args)
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start cargo: {e}"))?;
            let stdout = child.stdout.take().ok_or("no stdout from cargo")?;
            let mut suites = Suites::default();
            for line in BufReader::new(stdout).lines() {
                let line = line.map_err(|e| format!("reading cargo's output: {e}"))?;
                println!("{line}");
                suites.line(&line);
            }
            let status = child.wait().map_err(|e| format!("waiting for cargo: {e}"))?;
            let crashed = suites.finish();
            totals.passed += suites.totals.passed;
            totals.failed += suites.totals.failed;
            totals.ignored += suites.totals.ignored;
            for crash in &crashed {
                println!("xtask: {crash}");
            }
            match (status.success(), crashed.is_empty()) {
                (true, true) => Ok(()),
                (true, false) => Err(crashed.join("; ")),
                (false, _) if !suites.started_any => {
                    // It failed before any suite ran (a build error): one failure, not none.
                    totals.failed += 1;
                    Err(format!("cargo exited with {status} before any test ran"))
                }
                (false, _) if crashed.is_empty() => Err(format!("cargo exited with {status}")),
                (false, _) => Err(format!("cargo exited with {status}: {}", crashed.join("; "))),
            }
        });
        if result.is_err() {
            failures.push(name.to_string());
        }
    }

    pub fn print_times(&self) {
        println!("\nxtask: stage times");
        for (name, elapsed, ok) in &self.times {
            let mark = if *ok { "ok" } else { "FAILED" };
            println!("  {:<36} {:>8.1} s  {mark}", name, elapsed.as_secs_f64());
        }
        println!("  {:<36} {:>8.1} s", "total", self.started.elapsed().as_secs_f64());
    }
}

/// What a test run's output says, line by line: the totals of the suites that finished, and the ones
/// that started and never finished (their runner or browser died), each counted as failed with the
/// tests it did not get to.
#[derive(Debug, Default)]
struct Suites {
    totals: TestTotals,
    /// Whether any suite said `running N tests`.
    started_any: bool,
    open: Option<OpenSuite>,
    crashed: Vec<String>,
}

/// A suite that said `running N tests` and has not printed its `test result:` yet.
#[derive(Debug)]
struct OpenSuite {
    planned: u64,
    finished: u64,
    /// The test that started last and has not finished.
    current: Option<String>,
}

impl Suites {
    fn line(&mut self, line: &str) {
        let line = line.trim();
        if let Some(result) = parse_test_result(line) {
            self.totals.passed += result.passed;
            self.totals.failed += result.failed;
            self.totals.ignored += result.ignored;
            self.open = None;
        } else if let Some(planned) = line
            .strip_prefix("running ")
            .and_then(|rest| rest.strip_suffix(" tests").or_else(|| rest.strip_suffix(" test")))
            .and_then(|n| n.parse().ok())
        {
            self.close_crashed();
            self.started_any = true;
            self.open = Some(OpenSuite {
                planned,
                finished: 0,
                current: None,
            });
        } else if let Some(open) = self.open.as_mut() {
            // wasm-bindgen-test logs `Invoking test: NAME` (with --nocapture); libtest prints
            // `test NAME ... ` as a test starts and its outcome after it.
            if let Some(name) = line.strip_prefix("Invoking test: ") {
                open.current = Some(name.trim().to_string());
            } else if let Some(rest) = line.strip_prefix("test ") {
                match rest.split_once(" ... ") {
                    Some((_, outcome)) if ["ok", "FAILED", "ignored"].iter().any(|o| outcome.ends_with(o)) => {
                        open.finished += 1;
                        open.current = None;
                    }
                    Some((name, _)) => open.current = Some(name.to_string()),
                    None => {
                        if let Some(name) = rest.strip_suffix(" ...") {
                            open.current = Some(name.to_string());
                        }
                    }
                }
            }
        }
    }

    /// Ends the output: a suite still open died; returns what died where.
    fn finish(&mut self) -> Vec<String> {
        self.close_crashed();
        std::mem::take(&mut self.crashed)
    }

    fn close_crashed(&mut self) {
        let Some(open) = self.open.take() else { return };
        let missing = open.planned.saturating_sub(open.finished);
        self.totals.failed += missing.max(1);
        self.crashed.push(format!(
            "a suite died after {} of {} tests, in {} ({} not run counted as failed)",
            open.finished,
            open.planned,
            open.current.as_deref().unwrap_or("an unnamed test"),
            missing.max(1)
        ));
    }
}

/// Parses `test result: ok. 3 passed; 0 failed; 1 ignored; ...`.
fn parse_test_result(line: &str) -> Option<TestTotals> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let mut totals = TestTotals::default();
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(kind), Some(count)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else { continue };
        match kind {
            "passed" => totals.passed = count,
            "failed" => totals.failed = count,
            "ignored" => totals.ignored = count,
            _ => {}
        }
    }
    Some(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cargo_test_result_lines() {
        let line = "test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(
            parse_test_result(line),
            Some(TestTotals {
                passed: 3,
                failed: 2,
                ignored: 1
            })
        );
        assert_eq!(
            parse_test_result("test result: ok. 12 passed; 0 failed; 0 ignored; 0 filtered out; finished in 88.2s"),
            Some(TestTotals {
                passed: 12,
                failed: 0,
                ignored: 0
            })
        );
        assert_eq!(parse_test_result("running 3 tests"), None);
    }

    #[test]
    fn a_suite_that_dies_is_counted_as_failed_with_the_test_it_died_in() {
        let mut suites = Suites::default();
        for line in [
            "running 2 tests",
            "test a ... ok",
            "test b ... ok",
            "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s",
            "running 5 tests",
            "Invoking test: training::staged_trains_on_webgpu",
            "test training::staged_trains_on_webgpu ... ok",
            "Invoking test: training::head_only_trains_on_the_cpu_backend_in_the_browser",
            "Error: missing field `chunk`",
        ] {
            suites.line(line);
        }
        let crashed = suites.finish();
        assert_eq!(
            crashed,
            [
                "a suite died after 1 of 5 tests, in training::head_only_trains_on_the_cpu_backend_in_the_browser (4 not run counted as failed)"
            ]
        );
        assert_eq!(
            suites.totals,
            TestTotals {
                passed: 2,
                failed: 4,
                ignored: 0
            }
        );
    }

    #[test]
    fn libtest_start_lines_name_the_running_test_and_finished_suites_report_nothing() {
        let mut suites = Suites::default();
        for line in [
            "running 1 test",
            "test e2e_folders::five ... ",
            "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9s",
        ] {
            suites.line(line);
        }
        assert!(suites.finish().is_empty());
        assert_eq!(suites.totals.failed, 1);
        let mut died = Suites::default();
        died.line("running 1 test");
        died.line("test e2e_folders::five ... ");
        assert_eq!(
            died.finish(),
            ["a suite died after 0 of 1 tests, in e2e_folders::five (1 not run counted as failed)"]
        );
    }
}
