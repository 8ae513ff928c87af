//! `cpu-probe [--iterations N]`
//!
//! How fast the core under this vCPU runs right now, for `scripts/bench-phases`: a loop of
//! twelve independent integer chains, so its speed is the core's instruction throughput, which a
//! busy neighbour on the same physical core (its SMT sibling, given by the hypervisor to
//! another guest or to this machine's other vCPU) takes a share of. A loop of one dependent
//! chain or a walk through memory would hardly notice such a neighbour: each waits on its
//! own latency, not on the core's shared execution units. Prints
//! `{"ns_per_iteration": ...}`; lower is faster.

use std::time::Instant;

fn main() {
    let mut iterations: u64 = 20_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().map(|n| n.parse::<u64>())) {
            ("--iterations", Some(Ok(n))) if n > 0 => iterations = n,
            _ => {
                eprintln!("usage: cpu-probe [--iterations N] (N > 0)");
                std::process::exit(2);
            }
        }
    }
    // Twelve chains of two one-cycle operations each: 24 operations an iteration that no
    // chain's latency holds back, so the loop runs as fast as the core issues them.
    let mut x: [u64; 12] = std::array::from_fn(|i| i as u64 + 1);
    let started = Instant::now();
    for _ in 0..iterations {
        for (i, v) in x.iter_mut().enumerate() {
            *v = (*v ^ (0x9e37_79b9_7f4a_7c15 >> i)).rotate_left(i as u32 + 5);
        }
        // Keeps every chain alive in registers, without the stores `black_box` would add, so
        // the compiler can neither drop nor vectorise the loop.
        unsafe {
            std::arch::asm!(
                "/* {0} {1} {2} {3} {4} {5} {6} {7} {8} {9} {10} {11} */",
                in(reg) x[0], in(reg) x[1], in(reg) x[2], in(reg) x[3],
                in(reg) x[4], in(reg) x[5], in(reg) x[6], in(reg) x[7],
                in(reg) x[8], in(reg) x[9], in(reg) x[10], in(reg) x[11],
                options(nomem, nostack, preserves_flags)
            );
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{{\"ns_per_iteration\": {:.4}}}",
        elapsed.as_secs_f64() * 1e9 / iterations as f64
    );
}
