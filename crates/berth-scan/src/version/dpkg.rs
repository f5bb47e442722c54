//! Debian package versions, ordered as Debian Policy 5.6.12 and dpkg's `verrevcmp` say:
//! `[epoch:]upstream_version[-debian_revision]`, the epoch compared as a number, the two
//! other parts compared in alternating runs of non-digits and digits, where `~` sorts
//! before everything (even the end of the string) and letters sort before other
//! characters.

use std::cmp::Ordering;

/// Compares two Debian versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| verrevcmp(ra.as_bytes(), rb.as_bytes()))
}

/// Splits a version into epoch (0 when absent), upstream version and revision ("" when
/// absent, which compares equal to "0" as in dpkg).
fn split(v: &str) -> (u64, &str, &str) {
    let v = v.trim();
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => {
            // An epoch too large for u64 cannot be installed by dpkg either; saturate.
            (e.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// dpkg's weight of a character in a non-digit run: `~` below the end of the string, the
/// end and digits at 0, letters by their code, everything else after all letters.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`, on byte strings.
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lt(a: &str, b: &str) {
        assert_eq!(compare(a, b), Ordering::Less, "{a} < {b}");
        assert_eq!(compare(b, a), Ordering::Greater, "{b} > {a}");
    }

    #[test]
    fn tilde_sorts_before_everything_even_the_end_as_policy_5_6_12_shows() {
        // Policy's own example: "~~, ~~a, ~, the empty part, a".
        for pair in [
            ("1.0~~", "1.0~~a"),
            ("1.0~~a", "1.0~"),
            ("1.0~", "1.0"),
            ("1.0", "1.0a"),
        ] {
            lt(pair.0, pair.1);
        }
        lt("1.0~rc1-1", "1.0-1");
        lt("3.0.11-1~deb12u1", "3.0.11-1");
    }

    #[test]
    fn the_epoch_outweighs_the_rest() {
        lt("2.0", "1:1.0");
        lt("1:9.9", "2:0.1");
        assert_eq!(compare("0:1.2-3", "1.2-3"), Ordering::Equal);
    }

    #[test]
    fn letters_sort_before_non_letters_and_numbers_compare_numerically() {
        lt("1.0a", "1.0+");
        lt("1.0a", "1.0.");
        lt("1.2", "1.10");
        assert_eq!(compare("1.002", "1.2"), Ordering::Equal);
        lt("1.0-1", "1.0-1.1");
        lt("1.0-9", "1.0-10");
        // An absent revision is the same as revision 0.
        assert_eq!(compare("1.0", "1.0-0"), Ordering::Equal);
        // The revision splits at the last hyphen; the upstream version may hold others.
        lt("1.0-rc-1", "1.0-rc-2");
        lt("3.0.11-1+deb12u1", "3.0.11-1+deb12u2");
    }
}
