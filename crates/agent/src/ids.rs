//! Which ids the agent accepts. Sandbox, volume and snapshot ids become file names,
//! cgroup paths and runtime arguments, so only a safe alphabet gets through: no path
//! traversal, no option injection.

/// A sandbox id: 1-64 of `a-z` and `0-9` (hangar uses `InstanceId::short`).
pub fn is_sandbox_id(id: &str) -> bool {
    within(id, |b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A volume or snapshot id: a sandbox id's alphabet and `-`.
pub fn is_volume_id(id: &str) -> bool {
    within(id, |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn within(id: &str, allowed: impl Fn(u8) -> bool) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_safe_alphabet_passes() {
        assert!(is_sandbox_id("i0123abc"));
        assert!(is_volume_id("vol-a"));
        assert!(!is_sandbox_id("vol-a"), "sandbox ids have no dash");
        for bad in ["", "../etc", "A", "a/b", "a b", &"a".repeat(65)] {
            assert!(!is_sandbox_id(bad), "{bad:?} passed as a sandbox id");
            assert!(!is_volume_id(bad), "{bad:?} passed as a volume id");
        }
        assert!(is_sandbox_id(&"a".repeat(64)));
    }
}
