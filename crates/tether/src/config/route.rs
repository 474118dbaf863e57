//! `[[routes]]`: what a route matches, how it rewrites the request and the response, and
//! where the request goes — a backend, a split between backends, a redirect, or an answer
//! of Tether's own.

use http::{HeaderName, HeaderValue, Method, StatusCode};

/// How a route matches the request's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com` (compared case-insensitively, port ignored).
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (stored with the leading dot).
    Suffix(String),
}

impl HostMatch {
    /// Whether `host` (a name without port) matches, ignoring ASCII case; a suffix pattern
    /// needs at least one more label (`*.example.com` does not match `example.com`).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(e) => host.eq_ignore_ascii_case(e),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

/// One `[[routes]]` entry: the first whose every match key matches takes the request.
#[derive(Debug, Clone)]
pub struct Route {
    /// What the request must look like.
    pub matcher: RouteMatch,
    /// What changes on the way to the server and back.
    pub rewrite: Rewrite,
    /// Where it goes.
    pub action: RouteAction,
}

/// A route's match keys; each one absent or empty matches anything.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// `host`.
    pub host: Option<HostMatch>,
    /// `path_prefix`.
    pub path_prefix: Option<String>,
    /// `path_regex` (the `regex` crate's syntax, matched anywhere in the path unless
    /// anchored).
    pub path_regex: Option<regex::Regex>,
    /// `listeners`: names of the listeners the route applies to.
    pub listeners: Vec<String>,
    /// `methods`.
    pub methods: Vec<Method>,
    /// `headers`: each header must be present with exactly this value.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A route's rewrites.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// `strip_prefix`: removed from the start of the path when present.
    pub strip_prefix: Option<String>,
    /// `add_prefix`: put before the path (after `strip_prefix`).
    pub add_prefix: Option<String>,
    /// `request_headers`: applied to the request before it is forwarded.
    pub request_headers: HeaderEdits,
    /// `response_headers`: applied to the server's response.
    pub response_headers: HeaderEdits,
}

/// `{ set = {..}, add = {..}, remove = [..] }`, applied in the order remove, set, add.
#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    /// Replace (or create) these headers.
    pub set: Vec<(HeaderName, Template)>,
    /// Add these values beside any existing ones.
    pub add: Vec<(HeaderName, Template)>,
    /// Remove these headers.
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// No edit at all.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Where a matched request goes.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// `backend`.
    Backend(String),
    /// `split`: backends by weight; `sticky` keeps a client on its side with a signed cookie
    /// named `cookie`.
    Split {
        /// The sides, in file order.
        sides: Vec<SplitSide>,
        /// `sticky_split` (default true).
        sticky: bool,
        /// `split_cookie` (default `tether_split`).
        cookie: String,
    },
    /// `redirect`.
    Redirect {
        /// `location`, with placeholders.
        location: Template,
        /// `status` (default 308).
        status: StatusCode,
    },
    /// `respond`: Tether answers without any server.
    Respond {
        /// `status`.
        status: StatusCode,
        /// `body` (default empty).
        body: String,
        /// `content_type` (default `text/plain; charset=utf-8`).
        content_type: HeaderValue,
    },
}

/// One side of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSide {
    /// Backend name.
    pub backend: String,
    /// Share of new clients, relative to the other sides' (0 takes no new client).
    pub weight: u32,
}

/// A header value or redirect location with `{placeholders}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template(pub Vec<Part>);

/// A piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text as written.
    Text(String),
    /// `{client_ip}`: the client's address (`X-Forwarded-For` from `trusted_proxies`).
    ClientIp,
    /// `{host}`: the request's host, without a port.
    Host,
    /// `{request_id}`.
    RequestId,
    /// `{scheme}`: `http` or `https`, as the client connected.
    Scheme,
    /// `{path}`.
    Path,
    /// `{query}`: the query without `?` (empty when none).
    Query,
    /// `{path_and_query}`.
    PathAndQuery,
}

/// The placeholders a [`Template`] knows, by name.
pub const PLACEHOLDERS: [(&str, Part); 7] = [
    ("client_ip", Part::ClientIp),
    ("host", Part::Host),
    ("request_id", Part::RequestId),
    ("scheme", Part::Scheme),
    ("path", Part::Path),
    ("query", Part::Query),
    ("path_and_query", Part::PathAndQuery),
];

impl Template {
    /// Parses `text`, whose `{name}` pieces must be known placeholders; the error names the
    /// first unknown one or an unclosed brace.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| format!("unclosed '{{' in {text:?}"))?;
            let name = &after[..close];
            let part = PLACEHOLDERS.iter().find(|(n, _)| *n == name).map(|(_, p)| p.clone());
            parts.push(part.ok_or_else(|| {
                let known: Vec<_> = PLACEHOLDERS.iter().map(|(n, _)| format!("{{{n}}}")).collect();
                format!("unknown placeholder {{{name}}}; known: {}", known.join(" "))
            })?);
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template(parts))
    }

    /// The text with each placeholder replaced by `value(part)`.
    pub fn render<V: AsRef<str>>(&self, value: impl Fn(&Part) -> V) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                other => out.push_str(value(other).as_ref()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_placeholders_and_name_mistakes() {
        let rows: [(&str, Result<Vec<Part>, &str>); 5] = [
            ("plain", Ok(vec![Part::Text("plain".into())])),
            (
                "https://{host}{path_and_query}",
                Ok(vec![Part::Text("https://".into()), Part::Host, Part::PathAndQuery]),
            ),
            ("{client_ip}", Ok(vec![Part::ClientIp])),
            ("{nope}", Err("unknown placeholder {nope}")),
            ("a{host", Err("unclosed")),
        ];
        for (text, want) in rows {
            match (Template::parse(text), want) {
                (Ok(t), Ok(parts)) => assert_eq!(t.0, parts, "{text}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{text}: {e}"),
                (got, want) => panic!("{text}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn render_fills_every_placeholder() {
        let t =
            Template::parse("{scheme}://{host}{path}?{query} {client_ip} {request_id}").unwrap();
        let out = t.render(|p| match p {
            Part::Scheme => "https",
            Part::Host => "a.example",
            Part::Path => "/x",
            Part::Query => "q=1",
            Part::ClientIp => "192.0.2.1",
            Part::RequestId => "abc",
            _ => "?",
        });
        assert_eq!(out, "https://a.example/x?q=1 192.0.2.1 abc");
    }
}
