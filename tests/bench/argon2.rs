//! Benchmark helper: the time one argon2id password verification takes on this machine with
//! Gatehouse's default cost (19 MiB, t=2, p=1), single-threaded. `tests/bench/run.sh` divides
//! the cores by it to get the login ceiling, measured in the same run as the logins.
//!
//! Usage: `bench-argon2 [ROUNDS]`; prints the median milliseconds per verification.

use gatehouse::crypto::password::{self, PasswordPolicy};
use gatehouse::crypto::SecretString;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let pw = SecretString::new("benchmark passphrase 42".into());
    let Ok(phc) = password::hash(&pw, PasswordPolicy::default()) else {
        eprintln!("bench-argon2: hashing failed");
        return ExitCode::from(1);
    };
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        if !password::verify(&pw, &phc) {
            eprintln!("bench-argon2: verification failed");
            return ExitCode::from(1);
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!("{:.3}", times[times.len() / 2]);
    ExitCode::SUCCESS
}
