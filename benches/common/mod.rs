//! Statistics and machine state shared by the benchmarks that print tables.

/// The median of the values (the mean of the middle two for an even count); `None` when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        l if l % 2 == 1 => Some(v[l / 2]),
        l => Some((v[l / 2 - 1] + v[l / 2]) / 2.0),
    }
}

/// One-minute load average, where the system reports it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "unknown".into())
}
