//! Built-in redaction rules: personal data and credential shapes, each a pattern and, where a
//! pattern alone would catch innocent text, a check on the match (Luhn for payment cards, the
//! IBAN checksum, SSN area rules, a real IPv6 parse).
//!
//! Patterns use ASCII word boundaries and classes, which keep the combined prefilter a fast
//! DFA scan.

/// A check a match must pass to be redacted.
pub type Validator = fn(&str) -> bool;

pub struct Preset {
    pub name: &'static str,
    pub pattern: &'static str,
    pub validate: Option<Validator>,
    /// Group 1 is kept (a prefix such as `Bearer `); the rest is replaced.
    pub keeps_prefix: bool,
}

const fn preset(name: &'static str, pattern: &'static str) -> Preset {
    Preset {
        name,
        pattern,
        validate: None,
        keeps_prefix: false,
    }
}

const fn checked(name: &'static str, pattern: &'static str, validate: Validator) -> Preset {
    Preset {
        name,
        pattern,
        validate: Some(validate),
        keeps_prefix: false,
    }
}

pub const PRESETS: &[Preset] = &[
    // Credentials first: a key inside an email-like string is still a key.
    preset(
        "private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?s:.*?)-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    ),
    preset(
        "jwt",
        r"(?-u:\b)eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
    ),
    Preset {
        name: "bearer_token",
        pattern: r"(?i)((?-u:\b)bearer[ \t]+)[A-Za-z0-9._~+/=-]{16,}",
        validate: None,
        keeps_prefix: true,
    },
    preset(
        "openai_key",
        r"(?-u:\b)sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}",
    ),
    preset(
        "aws_access_key",
        r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}(?-u:\b)",
    ),
    preset(
        "github_token",
        r"(?-u:\b)(?:(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})(?-u:\b)",
    ),
    // Azure AI services keys: 32 hex digits, or the newer 84-character form.
    preset(
        "azure_key",
        r"(?-u:\b)(?:[0-9a-f]{32}|[0-9A-Za-z]{84})(?-u:\b)",
    ),
    preset(
        "email",
        r"(?i)(?-u:\b)[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?-u:\b)",
    ),
    checked(
        "payment_card",
        r"(?-u:\b)\d(?:[ -]?\d){12,18}(?-u:\b)",
        luhn,
    ),
    checked("us_ssn", r"(?-u:\b)\d{3}-\d{2}-\d{4}(?-u:\b)", ssn),
    checked(
        "iban",
        r"(?-u:\b)[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}(?-u:\b)",
        iban,
    ),
    // International (+…), North American, and spaced national forms with a trunk 0.
    preset(
        "phone",
        r"(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}(?-u:\b)|(?-u:\b)\(?[2-9]\d{2}\)?[ .-]\d{3}[ .-]\d{4}(?-u:\b)|(?-u:\b)0\d{1,4}(?:[ ]\d{2,4}){2,4}(?-u:\b))",
    ),
    checked(
        "ipv6",
        r"(?i)(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|(?:[0-9a-f]{1,4}:){1,7}:(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})?|::(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,7})?",
        ipv6,
    ),
    preset(
        "ipv4",
        r"(?-u:\b)(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?-u:\b)",
    ),
];

/// Named sets of presets.
pub const GROUPS: &[(&str, &[&str])] = &[
    (
        "api_keys",
        &[
            "private_key",
            "jwt",
            "bearer_token",
            "openai_key",
            "aws_access_key",
            "github_token",
            "azure_key",
        ],
    ),
    (
        "pii",
        &[
            "email",
            "payment_card",
            "us_ssn",
            "iban",
            "phone",
            "ipv6",
            "ipv4",
        ],
    ),
];

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Preset names a name stands for: one preset, a group, or `all`.
pub fn expand(name: &str) -> Option<Vec<&'static Preset>> {
    if name == "all" {
        return Some(PRESETS.iter().collect());
    }
    if let Some((_, members)) = GROUPS.iter().find(|(g, _)| *g == name) {
        return Some(members.iter().filter_map(|m| find(m)).collect());
    }
    find(name).map(|p| vec![p])
}

fn digits(s: &str) -> Vec<u32> {
    s.chars().filter_map(|c| c.to_digit(10)).collect()
}

/// The Luhn checksum of a card number (separators ignored).
pub fn luhn(s: &str) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A US SSN that could be issued: not area 000, 666 or 9xx, group 00, or serial 0000.
fn ssn(s: &str) -> bool {
    let (area, rest) = s.split_at(3);
    let (group, serial) = (&rest[1..3], &rest[4..]);
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// The IBAN checksum (ISO 13616, mod 97 = 1).
fn iban(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut rem: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// A real address with at least one group (`::` alone, the unspecified address, is not data).
fn ipv6(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_hexdigit()) && s.parse::<std::net::Ipv6Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    /// Whether the preset redacts something in `text` (pattern and check together).
    fn hits(name: &str, text: &str) -> bool {
        let p = find(name).unwrap();
        let re = Regex::new(p.pattern).unwrap();
        re.find_iter(text)
            .any(|m| p.validate.is_none_or(|v| v(m.as_str())))
    }

    #[test]
    fn every_preset_has_positive_and_negative_examples() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "email",
                &["mail jane.doe+tag@example.co.uk now", "A@B.IO"],
                &["jane at example dot com", "user@localhost", "@handle"],
            ),
            (
                "phone",
                &[
                    "+1 415 555 2671",
                    "+44 20 7946 0958",
                    "(415) 555-2671",
                    "+33 1 23 45 67 89",
                    "020 7946 0958",
                    "+49-30-1234-5678",
                ],
                &[
                    "2024-10-21",
                    "version 1.2.3",
                    "order 12345678",
                    "12:30:45",
                    "3.14159",
                ],
            ),
            (
                "payment_card",
                &[
                    "4111 1111 1111 1111",
                    "5500-0000-0000-0004",
                    "378282246310005",
                ],
                &["4111 1111 1111 1112", "order 1234567812345678", "12345"],
            ),
            (
                "us_ssn",
                &["SSN 123-45-6789"],
                &[
                    "000-12-3456",
                    "666-12-3456",
                    "900-12-3456",
                    "123-00-4567",
                    "123-45-0000",
                    "1234-56-789",
                ],
            ),
            (
                "iban",
                &["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"],
                &["DE89 3704 0044 0532 0130 01", "AB12 CDEF GHIJ"],
            ),
            (
                "ipv4",
                &["from 192.168.1.20 via", "10.0.0.1"],
                &["1.2.3", "256.1.1.1", "10.0.19045.1x"],
            ),
            (
                "ipv6",
                &[
                    "2001:db8::8a2e:370:7334",
                    "fe80::1",
                    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
                ],
                &["12:30:45", "a:b", "::::"],
            ),
            (
                "jwt",
                &[
                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                ],
                &["eyJ only", "a.b.c"],
            ),
            (
                "bearer_token",
                &[
                    "Authorization: Bearer abcdefghijklmnop1234",
                    "bearer\tAAAAAAAAAAAAAAAAAAAA",
                ],
                &["bearer of news", "Bearer short"],
            ),
            (
                "openai_key",
                &[
                    "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
                    "sk-abcdefghijklmnopqrstuvwx",
                ],
                &["sk-short", "task-abcdefghijklmnopqrstuvwxyz"],
            ),
            (
                "aws_access_key",
                &["AKIAIOSFODNN7EXAMPLE"],
                &["AKIA123", "XKIAIOSFODNN7EXAMPLE"],
            ),
            (
                "github_token",
                &[
                    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                    "github_pat_11ABCDEFG0123456789_abcdefghij",
                ],
                &["ghp_short", "gh_abcdefghijklmnopqrstuvwxyz0123456789"],
            ),
            (
                "azure_key",
                &["key 0123456789abcdef0123456789abcdef end"],
                &["0123456789abcdef", "0123456789ABCDEF0123456789ABCDEF"],
            ),
            (
                "private_key",
                &[
                    "-----BEGIN RSA PRIVATE KEY-----\nMIIE\nabc\n-----END RSA PRIVATE KEY-----",
                    "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----",
                ],
                &[
                    "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
                    "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----",
                ],
            ),
        ];
        for (name, positive, negative) in cases {
            for text in *positive {
                assert!(hits(name, text), "{name} should match {text:?}");
            }
            for text in *negative {
                assert!(!hits(name, text), "{name} should not match {text:?}");
            }
        }
        for p in PRESETS {
            assert!(
                cases.iter().any(|(n, ..)| n == &p.name),
                "{} has examples",
                p.name
            );
        }
    }

    #[test]
    fn groups_and_all_expand_to_presets() {
        assert_eq!(expand("all").unwrap().len(), PRESETS.len());
        let keys: Vec<&str> = expand("api_keys").unwrap().iter().map(|p| p.name).collect();
        assert!(keys.contains(&"openai_key") && !keys.contains(&"email"));
        assert_eq!(expand("pii").unwrap().len(), 7);
        assert!(expand("nope").is_none());
    }
}
