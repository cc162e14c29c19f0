//! Facts about this machine read from /proc.

/// A `/proc/meminfo` figure (`key` with its colon, e.g. `"MemTotal:"`) in MiB; 0 if absent.
pub fn meminfo_mib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_machines_memory() {
        let total = super::meminfo_mib("MemTotal:");
        assert!(total > 0);
        assert!(super::meminfo_mib("MemAvailable:") <= total);
        assert_eq!(super::meminfo_mib("NoSuchKey:"), 0);
    }
}
