//! Value parsers and parse helpers of the sidecar's settings: durations,
//! sizes, addresses and URLs, each error naming the flag and its
//! environment twin.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use http::Uri;

use super::{CollectorFormat, ConfigError};

/// A clap value parser from a parse function whose error, like a
/// [`ConfigError`], names the flag and its environment twin, so a bad value
/// reads the same whether it came from the command line or the environment.
#[derive(Clone, Copy)]
pub struct NamedParser<T>(fn(&str) -> Result<T, String>);

impl<T> NamedParser<T> {
    /// A parser from `parse`, whose error says what is wrong with the value.
    pub fn new(parse: fn(&str) -> Result<T, String>) -> Self {
        NamedParser(parse)
    }
}

impl<T: Clone + Send + Sync + 'static> TypedValueParser for NamedParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let message = match value.to_str() {
            Some(s) => match (self.0)(s) {
                Ok(v) => return Ok(v),
                Err(m) => m,
            },
            None => format!("{value:?} is not UTF-8"),
        };
        let flag = arg.and_then(clap::Arg::get_long).unwrap_or("?");
        let setting = match arg.and_then(clap::Arg::get_env) {
            Some(env) => format!("--{flag} ({})", env.to_string_lossy()),
            None => format!("--{flag}"),
        };
        Err(clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!("invalid {setting}: {message}\n"),
        )
        .with_cmd(cmd))
    }
}

/// Durations such as `500ms`, `15s`, `2m`, `1h` (see [`parse_duration`]), zero included.
pub fn duration() -> NamedParser<Duration> {
    NamedParser(parse_duration)
}

/// Durations more than zero.
pub fn positive_duration() -> NamedParser<Duration> {
    NamedParser(|s| {
        parse_duration(s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{s:?} is not a positive duration such as 30s, 500ms or 2m"))
    })
}

/// `always`, or a positive duration such as `20ms`: when a spooled record
/// is fsync'd (`--spool-sync-interval`).
pub fn spool_sync() -> NamedParser<crate::recording::SpoolSync> {
    NamedParser(|s| {
        use crate::recording::SpoolSync;
        if s.trim() == "always" {
            return Ok(SpoolSync::Always);
        }
        parse_duration(s)
            .ok()
            .filter(|d| !d.is_zero())
            .map(SpoolSync::Interval)
            .ok_or_else(|| {
                format!("{s:?} is neither `always` nor a positive duration such as 20ms")
            })
    })
}

/// A number of bytes more than zero.
pub fn positive_bytes() -> NamedParser<u64> {
    NamedParser(|s| {
        s.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{s:?} is not a positive number of bytes"))
    })
}

/// `IP:PORT` (an IPv6 address may come unbracketed, as `$(POD_IP):15020` expands).
pub fn socket_addr() -> NamedParser<SocketAddr> {
    NamedParser(|s| {
        parse_socket_addr(s).map_err(|e| format!("{s:?} is not an IP:PORT address: {e}"))
    })
}

/// `eventlist` or `ndjson`, listed with their meaning in `--help`.
pub fn collector_format() -> impl TypedValueParser<Value = CollectorFormat> {
    PossibleValuesParser::new(
        CollectorFormat::ALL.map(|f| PossibleValue::new(f.as_str()).help(f.description())),
    )
    .try_map(|s| s.parse::<CollectorFormat>())
}

/// Parses `IP:PORT`. An IPv6 address may also come unbracketed
/// (`fd00::5:15020`, which is what `$(POD_IP):15020` expands to on an IPv6
/// pod): the port is then what follows the last colon.
pub(crate) fn parse_addr(
    s: &str,
    flag: &'static str,
    env: &'static str,
) -> Result<SocketAddr, ConfigError> {
    parse_socket_addr(s)
        .map_err(|e| ConfigError::new(flag, env, format!("{s:?} is not an IP:PORT address: {e}")))
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, std::net::AddrParseError> {
    let t = s.trim();
    t.parse::<SocketAddr>().or_else(|e| {
        t.rsplit_once(':')
            .and_then(|(ip, port)| {
                let ip = ip.parse::<std::net::Ipv6Addr>().ok()?;
                let port = port.parse::<u16>().ok()?;
                Some(SocketAddr::new(IpAddr::V6(ip), port))
            })
            .ok_or(e)
    })
}

pub(super) fn non_empty_path(
    p: &Path,
    flag: &'static str,
    env: &'static str,
) -> Result<(), ConfigError> {
    if p.as_os_str().is_empty() {
        return Err(ConfigError::new(flag, env, "must not be empty"));
    }
    Ok(())
}

/// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, with an IPv6
/// host bracketed, as client-go's in-cluster config builds it.
pub fn default_upstream(env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.is_empty())?;
    let port = env("KUBERNETES_SERVICE_PORT").filter(|p| !p.is_empty())?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    Some(format!("https://{host}:{port}"))
}

/// Parses a base URL (scheme + authority, no path beyond `/` for the
/// upstream). `http://` is accepted only when the host is loopback, because
/// the token or recordings would otherwise cross the network in clear.
pub(super) fn parse_base_url(
    s: &str,
    flag: &'static str,
    env: &'static str,
    allow_path: bool,
) -> Result<Uri, ConfigError> {
    let uri: Uri = s
        .trim()
        .parse()
        .map_err(|e| ConfigError::new(flag, env, format!("{s:?} is not a URL: {e}")))?;
    check_transport(&uri).map_err(|refusal| {
        let message = match refusal {
            UrlRefusal::NoHost => format!("{s:?} has no host"),
            UrlRefusal::HttpNotLoopback => {
                format!("{s:?}: http:// is allowed only for loopback hosts")
            }
            UrlRefusal::Scheme(other) => {
                format!("{s:?}: unsupported scheme {other:?}, use https://")
            }
        };
        ConfigError::new(flag, env, message)
    })?;
    let scheme = uri.scheme_str().unwrap_or("");
    let Some(authority) = uri.authority() else {
        return Err(ConfigError::new(flag, env, format!("{s:?} has no host")));
    };
    if authority.as_str().contains('@') {
        return Err(ConfigError::new(
            flag,
            env,
            "credentials in the URL are not allowed",
        ));
    }
    if !allow_path {
        let path = uri.path();
        if !(path.is_empty() || path == "/") || uri.query().is_some() {
            return Err(ConfigError::new(
                flag,
                env,
                format!("{s:?}: a path prefix is not supported"),
            ));
        }
        let base = format!("{scheme}://{authority}/");
        return base
            .parse()
            .map_err(|e| ConfigError::new(flag, env, format!("{s:?}: {e}")));
    }
    Ok(uri)
}

/// Why a URL may not be sent to: see [`check_transport`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    /// No host to send to (a relative URL).
    #[error("no host")]
    NoHost,
    /// `http://` to a host that is not loopback.
    #[error("http:// is allowed only for loopback hosts")]
    HttpNotLoopback,
    /// Neither `https` nor `http`.
    #[error("unsupported scheme {0:?}, use https://")]
    Scheme(String),
}

/// The one rule for every URL the sidecar sends to (the upstream, the
/// collector, the approval notifications): `https://`, or `http://` only to
/// a loopback host, because the token, the recordings or the names of
/// pending requests would otherwise cross the network in clear. Each caller
/// words the refusal for its setting.
pub fn check_transport(uri: &Uri) -> Result<(), UrlRefusal> {
    let host = uri.host().ok_or(UrlRefusal::NoHost)?;
    match uri.scheme_str().unwrap_or("") {
        "https" => Ok(()),
        "http" if is_loopback_host(host) => Ok(()),
        "http" => Err(UrlRefusal::HttpNotLoopback),
        other => Err(UrlRefusal::Scheme(other.to_string())),
    }
}

/// `--approval-notify-url`: a URL that passes [`check_transport`].
pub fn notify_url() -> NamedParser<Uri> {
    NamedParser(|s| {
        let uri: Uri = s.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
        check_transport(&uri)
            .map_err(|_| format!("{s:?}: must be https, or http to a loopback address"))?;
        Ok(uri)
    })
}

/// True for `localhost`, 127.0.0.0/8 and `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// Parses `500ms`, `15s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 15s, 500ms or 1m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?} has an unknown unit (use ms, s, m or h)")),
    };
    Ok(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("7d").is_err());
        assert!(parse_duration("").is_err());
    }
}
