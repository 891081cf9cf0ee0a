//! `cargo run --release -p facepay-matcher --example bench -- [--codes BITS] [--rerank R] [--single N] [gallery] [queries] [nlist nprobe spill]`:
//! the matcher benchmark without the rest of facepay (the same code as `facepay bench matcher`).

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = facepay_matcher::bench::BenchOptions::default();
    let mut single = None;
    while args.first().is_some_and(|a| a.starts_with("--")) {
        let value: usize = args.get(1).and_then(|v| v.parse().ok()).expect("--flag NUMBER");
        match args[0].as_str() {
            "--codes" => opts.codes.get_or_insert_with(Default::default).bits = value,
            "--rerank" => opts.codes.get_or_insert_with(Default::default).rerank = value,
            "--single" => single = Some(value),
            other => panic!("unknown flag {other}"),
        }
        args.drain(..2);
    }
    let args: Vec<usize> = args.iter().map(|a| a.parse().expect("numbers")).collect();
    if let Some(&g) = args.first() {
        opts.gallery = g;
    }
    if let Some(&q) = args.get(1) {
        opts.queries = q;
        opts.single = q;
    }
    if let Some(s) = single {
        opts.single = s;
    }
    if let (Some(&nlist), Some(&nprobe)) = (args.get(2), args.get(3)) {
        let spill = args.get(4).copied().unwrap_or(1);
        opts.ivf = Some(facepay_matcher::ivf::IvfOptions { nlist, spill, ..Default::default() });
        opts.nprobe = vec![nprobe];
    }
    let report = facepay_matcher::bench::run(&opts).expect("benchmark runs");
    println!("{}", serde_json::to_string(&report).expect("json"));
}
