//! Measures what GPU evidence costs watchd: `gpu::load()` once, then `Gpu::sample()` in a loop
//! in each scope, against the NVML that `WATCHD_NVML_LIBRARY` names, or the driver's. Used by
//! bench/gpu-check.sh; prints `name value` lines.
//!
//! ```sh
//! cargo build --release --example gpu_cost
//! target/release/examples/gpu_cost [PROBES]
//! ```

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use watchd::gpu::{self, Scope};

fn main() -> ExitCode {
    let probes = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(1000usize).max(1);
    let resident_before = resident_kib();
    let started = Instant::now();
    let loaded = gpu::load();
    println!("load_ms {:.3}", millis(started.elapsed()));
    let mut gpu = match loaded {
        Ok(gpu) => gpu,
        Err(why) => {
            println!("unavailable {why}");
            return ExitCode::from(2);
        }
    };
    println!("devices {}", gpu.devices());
    if let (Some(before), Some(after)) = (resident_before, resident_kib()) {
        println!("load_resident_kib {}", after.saturating_sub(before));
    }
    for (scope, name) in [(Scope::Process, "process"), (Scope::Device, "device")] {
        let mut took = Vec::with_capacity(probes);
        let mut evidence = 0;
        for _ in 0..probes {
            let started = Instant::now();
            // Every pid counts as the tree's: the most bookkeeping a probe can have.
            let sample = black_box(gpu.sample(scope, |_| true));
            took.push(started.elapsed());
            evidence += usize::from(sample.evidence);
        }
        took.sort();
        let at = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
        println!("sample_{name}_median_us {:.1}", micros(at(0.5)));
        println!("sample_{name}_p99_us {:.1}", micros(at(0.99)));
        println!("sample_{name}_evidence {evidence}/{probes}");
    }
    ExitCode::SUCCESS
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
