//! `cargo xtask bench`: the end-to-end benchmarks, run in the release (bench) profile.

use anyhow::{bail, Result};

use crate::cmd::{self, cargo};

/// A benchmark target: its name here, the package and `[[bench]]` target that hold it.
struct Bench {
    name: &'static str,
    package: &'static str,
    target: &'static str,
    about: &'static str,
}

const BENCHES: [Bench; 5] = [
    Bench {
        name: "storage",
        package: "ferrolite",
        target: "storage",
        about: "save and read back N documents through the Database API vs raw redb \
                (--docs N, --batch B, --seed S, --quick)",
    },
    Bench {
        name: "protocol",
        package: "ferrolite-protocol",
        target: "protocol",
        about: "encode and decode N `rev` messages through two BLIP connections, plain and \
                compressed, vs raw deflate (--docs N, --quick)",
    },
    Bench {
        name: "sync",
        package: "ferrolite",
        target: "sync",
        about: "scenarios S1-S6 between a ferrolite server and client process over loopback \
                WebSocket, optionally against the PouchDB peer in the same run \
                (--docs N, --samples K, --reps R, --peer, --quick)",
    },
    Bench {
        name: "blobs",
        package: "ferrolite",
        target: "blobs",
        about: "pull then push one N MB blob over loopback WebSocket, with the peak memory \
                growth (--mb N, default 50; --quick is 5)",
    },
    Bench {
        name: "gateway",
        package: "ferrolite-gateway",
        target: "gateway",
        about: "N continuous pullers and REST writers against a gateway process on loopback: \
                writes/s, write-to-client latency, peak memory, and the user-profile sync \
                function against the default routing (--clients N, --writes W, --rate R, \
                --seconds S, --rounds K, --quick)",
    },
];

/// `bench` alone lists the benchmarks; `bench NAME ARGS...` runs one, passing ARGS to it.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let Some((name, rest)) = args.split_first() else {
        list();
        return Ok(());
    };
    let Some(bench) = BENCHES.iter().find(|b| b.name == name) else {
        list();
        bail!("unknown bench `{name}`");
    };
    let mut command = cargo(["bench", "-p", bench.package, "--bench", bench.target, "--"]);
    command.args(rest);
    cmd::run(&mut command)
}

fn list() {
    println!("Benchmarks (cargo xtask bench <name> [args...]):");
    for bench in &BENCHES {
        println!("  {:<10} {}", bench.name, bench.about);
    }
}
