//! TLS material from PEM files: certificates (an upstream's `ca_file`, a server's chain)
//! and server configs for the emulators' HTTPS mode (and, with the production edge,
//! casegate's own listeners).

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Reads the PEM certificates of a file (a `ca_file`, or a certificate chain).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// A rustls server config from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> = read_certs(cert)?;
    let key_pem =
        std::fs::read(key).map_err(|e| format!("cannot read {}: {}", key.display(), e.kind()))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|_| format!("{} is not a PEM private key", key.display()))?
        .ok_or_else(|| format!("{} holds no private key", key.display()))?;
    server_config_der(chain, key)
}

/// A rustls server config from DER material.
pub fn server_config_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not make a TLS server: {e}"))
}

/// A served certificate expiring within this long is warned about at start and reload.
pub const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(14 * 86_400);

/// When the first certificate of `chain` (the one a server presents) stops being valid:
/// its `notAfter`, in seconds since 1970 (UTC); `None` when it cannot be read.
pub fn not_after(chain: &[CertificateDer<'_>]) -> Option<i64> {
    cert_not_after(chain.first()?)
}

/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
/// serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... } ... }`
/// (RFC 5280 section 4.1), walked in DER as far as `notAfter`.
fn cert_not_after(der: &[u8]) -> Option<i64> {
    let (0x30, cert, _) = der_element(der)? else {
        return None;
    };
    let (0x30, mut tbs, _) = der_element(cert)? else {
        return None;
    };
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2;
    }
    // serialNumber, signature, issuer.
    for tag in [0x02, 0x30, 0x30] {
        let (got, _, rest) = der_element(tbs)?;
        if got != tag {
            return None;
        }
        tbs = rest;
    }
    let (0x30, validity, _) = der_element(tbs)? else {
        return None;
    };
    let (_, _, after_not_before) = der_element(validity)?;
    let (tag, time, _) = der_element(after_not_before)?;
    asn1_time(tag, time)
}

/// One DER element at the start of `der`: its tag, its contents, and what follows it.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len, rest) = rest.split_at(n);
        (len.iter().fold(0, |a, &b| a << 8 | usize::from(b)), rest)
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// An X.509 `Time`: UTCTime `YYMMDDHHMMSSZ` (years 1950-2049) or GeneralizedTime
/// `YYYYMMDDHHMMSSZ` (RFC 5280 section 4.1.2.5), as seconds since 1970.
fn asn1_time(tag: u8, t: &[u8]) -> Option<i64> {
    let num = |s: &[u8]| {
        s.iter().try_fold(0i64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
        })
    };
    let (year, rest) = match (tag, t.len()) {
        (0x17, 13) => {
            let yy = num(&t[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &t[2..])
        }
        (0x18, 15) => (num(&t[..4])?, &t[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let [month, day, hour, minute, second] =
        [0, 2, 4, 6, 8].map(|at| num(&rest[at..at + 2]).unwrap_or(-1));
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..=23).contains(&hour)
        && (0..=59).contains(&minute)
        && (0..=60).contains(&second);
    valid.then(|| days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, the inverse of [`crate::upload::civil_from_days`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Says when the certificate casegate serves from `cert` expires, at start and at each
/// reload: a line naming the date, a warning when it is less than [`EXPIRY_WARNING`]
/// away or past (clients refuse an expired certificate). Returns its `notAfter`.
pub fn note_expiry(cert: &Path) -> Option<i64> {
    let Some(not_after) = file_not_after(cert) else {
        tracing::warn!(cert = %cert.display(), "the TLS certificate's expiry date cannot be read");
        return None;
    };
    let left = seconds_left(not_after);
    let at = expiry_text(not_after);
    let days_left = left.div_euclid(86_400);
    if left <= 0 {
        tracing::warn!(cert = %cert.display(), not_after = %at, "the TLS certificate has expired: clients refuse it; replace the file and send SIGHUP");
    } else if left < EXPIRY_WARNING.as_secs() as i64 {
        tracing::warn!(cert = %cert.display(), not_after = %at, days_left, "the TLS certificate expires soon; replace the file and send SIGHUP");
    } else {
        tracing::info!(cert = %cert.display(), not_after = %at, days_left, "TLS certificate");
    }
    Some(not_after)
}

/// The `notAfter` of the first certificate in the PEM file `cert`.
pub fn file_not_after(cert: &Path) -> Option<i64> {
    read_certs(cert).ok().and_then(|c| not_after(&c))
}

/// Seconds from now until `not_after` (seconds since 1970); zero or less once it passed.
pub fn seconds_left(not_after: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    not_after.saturating_sub(now)
}

/// `not_after` as RFC 3339 (UTC, to the second).
pub fn expiry_text(not_after: i64) -> String {
    let secs = u64::try_from(not_after).unwrap_or(0);
    crate::upload::rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_until(year: i32, month: u8, day: u8) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(1999, 12, 31);
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_certificates_not_after_is_read_from_either_time_form() {
        // UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280); each figure is the
        // date's Unix time as Python's datetime gives it.
        for ((y, m, d), want) in [
            ((2031, 5, 17), 1_936_742_400),
            ((2020, 2, 29), 1_582_934_400),
            ((2051, 1, 1), 2_556_144_000),
            ((4096, 1, 1), 67_090_118_400),
        ] {
            let cert = cert_until(y, m, d);
            assert_eq!(not_after(&[cert]), Some(want), "{y}-{m}-{d}");
        }
        assert_eq!(expiry_text(1_936_742_400), "2031-05-17T00:00:00Z");
        assert_eq!(asn1_time(0x17, b"310517235958Z"), Some(1_936_828_798));
        assert_eq!(asn1_time(0x17, b"991231000000Z"), Some(946_598_400));
        assert_eq!(asn1_time(0x18, b"20310517235958Z"), Some(1_936_828_798));
    }

    #[test]
    fn what_is_not_a_certificate_has_no_expiry() {
        let cert = cert_until(2031, 5, 17);
        // Every cut short of the whole: none, and no panic.
        for n in 0..cert.len() {
            let cut = CertificateDer::from(cert[..n].to_vec());
            assert_eq!(not_after(&[cut]), None, "{n} bytes");
        }
        assert_eq!(not_after(&[]), None);
        for (tag, t) in [
            (0x17, &b"311317000000Z"[..]),
            (0x17, b"310532000000Z"),
            (0x17, b"310517240000Z"),
            (0x17, b"31051700000+Z"),
            (0x17, b"310517000000+"),
            (0x18, b"310517000000Z"),
            (0x04, b"310517000000Z"),
        ] {
            assert_eq!(asn1_time(tag, t), None, "{:?}", String::from_utf8_lossy(t));
        }
    }
}
