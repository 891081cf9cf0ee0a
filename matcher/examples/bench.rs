//! `cargo run --release -p facepay-matcher --example bench -- [gallery] [queries] [nlist nprobe spill]`:
//! the matcher benchmark without the rest of facepay (the same code as `facepay bench matcher`).

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let mut opts = facepay_matcher::bench::BenchOptions::default();
    if let Some(&g) = args.first() {
        opts.gallery = g;
    }
    if let Some(&q) = args.get(1) {
        opts.queries = q;
        opts.single = q;
    }
    if let (Some(&nlist), Some(&nprobe)) = (args.get(2), args.get(3)) {
        let spill = args.get(4).copied().unwrap_or(1);
        opts.ivf = Some(facepay_matcher::ivf::IvfOptions { nlist, spill, ..Default::default() });
        opts.nprobe = vec![nprobe];
    }
    let report = facepay_matcher::bench::run(&opts).expect("benchmark runs");
    println!("{}", serde_json::to_string(&report).expect("json"));
}
