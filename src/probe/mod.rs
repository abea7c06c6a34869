//! Readings of the command's process tree: the /proc parsers (`parse`), which processes are the
//! tree (`walk`), successive scans turned into monotone totals (`sample`) and the OOM-kill
//! counters (`oom`). Nothing here decides anything.

mod oom;
mod parse;
mod sample;
mod walk;

pub use oom::OomCounters;
pub use parse::{Stat, parse_io, parse_stat};
pub use sample::{GpuFigures, Pressure, Sample, Sampler};
pub use walk::{Needs, Prober, Proc, ProcView, Scan, proc_view};
