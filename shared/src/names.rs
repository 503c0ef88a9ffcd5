//! The syntax Kubernetes gives names and values that the settings of the
//! sidecar and the webhook are checked against before they reach a pod spec
//! or a certificate: DNS labels and domains, resource quantities.

/// An RFC 1123 label as Kubernetes checks it (a namespace name, one label of
/// the cluster domain): 1 to 63 lowercase letters, digits and `-`, starting
/// and ending with a letter or digit.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS domain such as `cluster.local`: at most 253 characters of
/// [`is_dns_label`] labels joined by dots. A trailing dot is the caller's to
/// strip.
pub fn is_dns_domain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A resource quantity in the form a size is written in (`256Mi`, `1G`,
/// `1.5Gi`, `1000000`): digits, an optional decimal fraction, and an optional
/// binary (`Ki` `Mi` `Gi` `Ti` `Pi` `Ei`) or decimal (`k` `M` `G` `T` `P`
/// `E`) suffix. A subset of what the API server takes: no sign, no exponent
/// (`1e3`) and no milli (`m`), which no size needs.
pub fn is_quantity(s: &str) -> bool {
    const SUFFIXES: [&str; 12] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|suffix| s.strip_suffix(suffix))
        .unwrap_or(s);
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    match number.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(number),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_domains() {
        for ok in ["a", "cluster", "a-1", "0abc"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_domain("cluster.local"));
        assert!(is_dns_domain("corp"));
        for bad in ["", "cluster..local", "cluster.local.", "Cluster.local"] {
            assert!(!is_dns_domain(bad), "{bad}");
        }
        let long = vec!["a".repeat(63); 4].join(".");
        assert!(!is_dns_domain(&long), "{} characters", long.len());
    }

    #[test]
    fn quantities() {
        for ok in ["256Mi", "1G", "1.5Gi", "1000000", "0", "10k", "2Ei"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in [
            "", "Mi", "256MB", "256 Mi", "-1Gi", "1e3", "1.Gi", ".5Gi", "256mi", "1Gi ",
        ] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
