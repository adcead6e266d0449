//! The `ringmq-bench` load generator binary: see [`ringmq::bench`].

fn main() {
    std::process::exit(ringmq::bench::main());
}
