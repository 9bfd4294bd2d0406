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
            for line in BufReader::new(stdout).lines() {
                let line = line.map_err(|e| format!("reading cargo's output: {e}"))?;
                println!("{line}");
                if let Some(result) = parse_test_result(&line) {
                    totals.passed += result.passed;
                    totals.failed += result.failed;
                    totals.ignored += result.ignored;
                }
            }
            let status = child.wait().map_err(|e| format!("waiting for cargo: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("cargo exited with {status}"))
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
}
