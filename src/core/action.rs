//! What a job runs: the action as data (an HTTP webhook, a command, or a no-op) and its
//! validation, with a field path and a specific message for every rule.
//!
//! Also the names Meridian reserves for itself on the wire (the headers and environment
//! variables the executors set), so that validation and `crate::exec` agree on them.
//!
//! This module is pure: it must not do IO, read a clock, resolve hosts, look at the
//! file system, or depend on an HTTP client (it parses URLs with the `url` crate only).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::FieldError;

/// Most headers on one HTTP action.
pub const HEADERS_MAX: usize = 64;
/// Most bytes of header names plus values on one HTTP action.
pub const HEADERS_BYTES_MAX: usize = 16 * 1024;
/// Longest HTTP request body.
pub const BODY_BYTES_MAX: usize = 256 * 1024;
/// Longest URL.
pub const URL_BYTES_MAX: usize = 8 * 1024;
/// Most argv entries of one command.
pub const ARGV_MAX: usize = 256;
/// Most bytes of all argv entries together.
pub const ARGV_BYTES_MAX: usize = 64 * 1024;
/// Most environment variables given to one command.
pub const ENV_MAX: usize = 128;
/// Most bytes of environment names plus values given to one command.
pub const ENV_BYTES_MAX: usize = 64 * 1024;
/// Longest working directory (Linux's `PATH_MAX`).
pub const WORKING_DIR_BYTES_MAX: usize = 4096;

/// The HTTP methods an action may use.
pub const HTTP_METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// The firing id, sent so that targets can deduplicate attempts across the mesh.
pub const HEADER_IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The firing's scheduled instant, RFC 3339 UTC with millisecond precision.
pub const HEADER_SCHEDULED_AT: &str = "X-Meridian-Scheduled-At";
/// The attempt number, 1 for the first.
pub const HEADER_ATTEMPT: &str = "X-Meridian-Attempt";
/// The job's resource name, `regions/{region}/jobs/{job}`.
pub const HEADER_JOB: &str = "X-Meridian-Job";
/// W3C trace context of the attempt, when there is one.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Every header starting with this (any case) is Meridian's.
pub const HEADER_RESERVED_PREFIX: &str = "x-meridian-";

/// Environment variable carrying the firing id.
pub const ENV_FIRING_ID: &str = "MERIDIAN_FIRING_ID";
/// Environment variable carrying the scheduled instant (as [`HEADER_SCHEDULED_AT`]).
pub const ENV_SCHEDULED_AT: &str = "MERIDIAN_SCHEDULED_AT";
/// Environment variable carrying the attempt number.
pub const ENV_ATTEMPT: &str = "MERIDIAN_ATTEMPT";
/// Environment variable carrying the job's resource name.
pub const ENV_JOB: &str = "MERIDIAN_JOB";
/// Every environment variable starting with this is Meridian's.
pub const ENV_RESERVED_PREFIX: &str = "MERIDIAN_";

/// Headers the HTTP client computes itself (framing, connection management): a user
/// value would break the request, or the connection under HTTP/2.
const HEADERS_CLIENT_OWNED: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// What a job runs when it fires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Action {
    /// Call a webhook.
    Http(Http),
    /// Run a program on the worker's host.
    Command(Command),
    /// Do nothing and succeed: benchmarks measure the scheduler, not the action.
    Noop,
}

/// An HTTP request sent once per attempt; 2xx is success.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http {
    /// One of [`HTTP_METHODS`], upper case; `POST` when not given.
    #[serde(default = "default_method")]
    pub method: String,
    /// An absolute `http` or `https` URL.
    pub url: String,
    /// Extra request headers, in order; a name may repeat.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The request body, sent as is.
    #[serde(default)]
    pub body: String,
}

/// A program run directly (no shell) once per attempt; exit status 0 is success.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The program (looked up in `PATH` when it has no slash) and its arguments.
    pub argv: Vec<String>,
    /// Variables added to the worker's environment.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// An absolute directory to run in; the worker's own when not given.
    #[serde(default)]
    pub working_dir: Option<String>,
}

fn default_method() -> String {
    "POST".to_owned()
}

impl Action {
    /// The action of a request that may lack one: `action: is required` when absent.
    pub fn require(action: Option<Action>) -> Result<Action, FieldError> {
        action.ok_or_else(|| FieldError::new("action", "is required"))
    }

    /// Check every rule of this module; the error names the field (`action.http.url`)
    /// relative to the job.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            Action::Http(http) => http.validate(),
            Action::Command(command) => command.validate(),
            Action::Noop => Ok(()),
        }
    }
}

impl Http {
    /// The rules of `action.http.*`.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_url(&self.url)?;
        if !HTTP_METHODS.contains(&self.method.as_str()) {
            return Err(FieldError::new(
                "action.http.method",
                format!(
                    "{} is not one of {} (upper case)",
                    quote(&self.method),
                    HTTP_METHODS.join(", ")
                ),
            ));
        }
        validate_headers(&self.headers)?;
        if self.body.len() > BODY_BYTES_MAX {
            return Err(FieldError::new(
                "action.http.body",
                format!("is {} bytes, more than {BODY_BYTES_MAX}", self.body.len()),
            ));
        }
        Ok(())
    }
}

impl Command {
    /// The rules of `action.command.*`.
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_argv(&self.argv)?;
        validate_env(&self.env)?;
        if let Some(dir) = &self.working_dir {
            validate_working_dir(dir)?;
        }
        Ok(())
    }
}

fn validate_url(url: &str) -> Result<(), FieldError> {
    const FIELD: &str = "action.http.url";
    if url.is_empty() {
        return Err(FieldError::new(FIELD, "is required"));
    }
    if url.len() > URL_BYTES_MAX {
        return Err(FieldError::new(
            FIELD,
            format!("is {} bytes, more than {URL_BYTES_MAX}", url.len()),
        ));
    }
    let parsed = url::Url::parse(url).map_err(|e| match e {
        url::ParseError::EmptyHost => FieldError::new(FIELD, format!("{} has no host", quote(url))),
        e => FieldError::new(FIELD, format!("{} is not an absolute url: {e}", quote(url))),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FieldError::new(
            FIELD,
            format!("{} is not an http or https url", quote(url)),
        ));
    }
    // `url` refuses http(s) URLs without a host, but an empty one ("http://:80/")
    // would only fail at request time: say it now.
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(FieldError::new(
            FIELD,
            format!("{} has no host", quote(url)),
        ));
    }
    Ok(())
}

fn validate_headers(headers: &[(String, String)]) -> Result<(), FieldError> {
    const FIELD: &str = "action.http.headers";
    if headers.len() > HEADERS_MAX {
        return Err(FieldError::new(
            FIELD,
            format!("has {} entries, more than {HEADERS_MAX}", headers.len()),
        ));
    }
    let bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if bytes > HEADERS_BYTES_MAX {
        return Err(FieldError::new(
            FIELD,
            format!("are {bytes} bytes, more than {HEADERS_BYTES_MAX}"),
        ));
    }
    for (name, value) in headers {
        if name.is_empty() {
            return Err(FieldError::new(FIELD, "has a header with an empty name"));
        }
        if !name.bytes().all(is_token_byte) {
            return Err(FieldError::new(
                FIELD,
                format!("{} is not a valid header name", quote(name)),
            ));
        }
        let lower = name.to_ascii_lowercase();
        if lower == HEADER_IDEMPOTENCY_KEY.to_ascii_lowercase()
            || lower == HEADER_TRACEPARENT
            || lower.starts_with(HEADER_RESERVED_PREFIX)
        {
            return Err(FieldError::new(
                FIELD,
                format!("{} is reserved for meridian", quote(name)),
            ));
        }
        if HEADERS_CLIENT_OWNED.contains(&lower.as_str()) {
            return Err(FieldError::new(
                FIELD,
                format!("{} is set by the http client", quote(name)),
            ));
        }
        // Visible ASCII, space and tab: what every HTTP stack accepts in a value
        // (obs-text is deprecated, and CR/LF/NUL would split or end the header).
        if !value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(FieldError::new(
                FIELD,
                format!(
                    "the value of {} has a control or non-ascii character",
                    quote(name)
                ),
            ));
        }
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn validate_argv(argv: &[String]) -> Result<(), FieldError> {
    const FIELD: &str = "action.command.argv";
    let Some(program) = argv.first() else {
        return Err(FieldError::new(FIELD, "is empty"));
    };
    if program.is_empty() {
        return Err(FieldError::new(FIELD, "has an empty program (argv[0])"));
    }
    if argv.len() > ARGV_MAX {
        return Err(FieldError::new(
            FIELD,
            format!("has {} entries, more than {ARGV_MAX}", argv.len()),
        ));
    }
    let bytes: usize = argv.iter().map(String::len).sum();
    if bytes > ARGV_BYTES_MAX {
        return Err(FieldError::new(
            FIELD,
            format!("is {bytes} bytes, more than {ARGV_BYTES_MAX}"),
        ));
    }
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        return Err(FieldError::new(FIELD, format!("argv[{i}] has a nul byte")));
    }
    Ok(())
}

fn validate_env(env: &[(String, String)]) -> Result<(), FieldError> {
    const FIELD: &str = "action.command.env";
    if env.len() > ENV_MAX {
        return Err(FieldError::new(
            FIELD,
            format!("has {} entries, more than {ENV_MAX}", env.len()),
        ));
    }
    let bytes: usize = env.iter().map(|(n, v)| n.len() + v.len()).sum();
    if bytes > ENV_BYTES_MAX {
        return Err(FieldError::new(
            FIELD,
            format!("is {bytes} bytes, more than {ENV_BYTES_MAX}"),
        ));
    }
    for (i, (name, value)) in env.iter().enumerate() {
        if !is_env_name(name) {
            return Err(FieldError::new(
                FIELD,
                format!(
                    "{} is not a valid variable name (letters, digits and _, not starting with a digit)",
                    quote(name)
                ),
            ));
        }
        if name.starts_with(ENV_RESERVED_PREFIX) {
            return Err(FieldError::new(
                FIELD,
                format!("{} is reserved for meridian", quote(name)),
            ));
        }
        if value.contains('\0') {
            return Err(FieldError::new(
                FIELD,
                format!("the value of {} has a nul byte", quote(name)),
            ));
        }
        // The later one would silently win: most likely a mistake.
        if env[..i].iter().any(|(n, _)| n == name) {
            return Err(FieldError::new(
                FIELD,
                format!("{} is given twice", quote(name)),
            ));
        }
    }
    Ok(())
}

/// POSIX portable names: what every shell and program can read back.
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn validate_working_dir(dir: &str) -> Result<(), FieldError> {
    const FIELD: &str = "action.command.working_dir";
    if dir.len() > WORKING_DIR_BYTES_MAX {
        return Err(FieldError::new(
            FIELD,
            format!("is {} bytes, more than {WORKING_DIR_BYTES_MAX}", dir.len()),
        ));
    }
    if dir.contains('\0') {
        return Err(FieldError::new(FIELD, "has a nul byte"));
    }
    // Relative to what would depend on where the worker was started.
    if !Path::new(dir).is_absolute() {
        return Err(FieldError::new(
            FIELD,
            format!("{} is not an absolute path", quote(dir)),
        ));
    }
    Ok(())
}

/// `s` quoted and escaped for a message, cut short when long (messages echo user input).
fn quote(s: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 80;
    if s.chars().count() <= SHOWN_CHARS_MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(SHOWN_CHARS_MAX).collect();
        format!("{:?}…", head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str) -> Http {
        Http {
            method: "POST".into(),
            url: url.into(),
            headers: vec![],
            body: String::new(),
        }
    }

    fn command(argv: &[&str]) -> Command {
        Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            working_dir: None,
        }
    }

    fn err(action: Action) -> FieldError {
        action.validate().expect_err("should be invalid")
    }

    fn with_headers(headers: &[(&str, &str)]) -> Action {
        let mut h = http("https://example.com/hook");
        h.headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Action::Http(h)
    }

    fn with_env(env: &[(&str, &str)]) -> Action {
        let mut c = command(&["/bin/true"]);
        c.env = env
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        Action::Command(c)
    }

    #[test]
    fn missing_action_names_the_field() {
        let e = Action::require(None).unwrap_err();
        assert_eq!(e.field, "action");
        assert_eq!(e.message, "is required");
        assert_eq!(Action::require(Some(Action::Noop)), Ok(Action::Noop));
    }

    #[test]
    fn valid_actions_pass() {
        Action::Noop.validate().unwrap();
        Action::Http(http("http://127.0.0.1:8080/hook?x=1"))
            .validate()
            .unwrap();
        Action::Http(http("https://[::1]/")).validate().unwrap();
        let full = with_headers(&[("Authorization", "Bearer t0k\tn"), ("X-Custom", "")]);
        full.validate().unwrap();
        let mut c = command(&["sh", "-c", "echo hi"]);
        c.env = vec![("FOO_1".into(), "bar baz".into()), ("_x".into(), "".into())];
        c.working_dir = Some("/tmp".into());
        Action::Command(c).validate().unwrap();
    }

    #[test]
    fn url_must_be_absolute_http_with_host() {
        let e = err(Action::Http(http("ftp://x")));
        assert_eq!(e.field, "action.http.url");
        assert_eq!(e.message, r#""ftp://x" is not an http or https url"#);

        let e = err(Action::Http(http("/relative/path")));
        assert_eq!(e.field, "action.http.url");
        assert!(
            e.message
                .starts_with(r#""/relative/path" is not an absolute url"#),
            "{}",
            e.message
        );

        assert_eq!(err(Action::Http(http(""))).message, "is required");
        let e = err(Action::Http(http("http://")));
        assert_eq!(e.field, "action.http.url");
        assert_eq!(e.message, r#""http://" has no host"#);
        let e = err(Action::Http(http("file:///etc/passwd")));
        assert!(
            e.message.contains("not an http or https url"),
            "{}",
            e.message
        );
        let long = format!("https://example.com/{}", "a".repeat(URL_BYTES_MAX));
        let e = err(Action::Http(http(&long)));
        assert!(e.message.contains("more than 8192"), "{}", e.message);
    }

    #[test]
    fn method_must_be_known_and_upper_case() {
        for m in HTTP_METHODS {
            let mut h = http("https://example.com");
            h.method = m.into();
            Action::Http(h).validate().unwrap();
        }
        for bad in ["post", "CONNECT", "", "TRACE"] {
            let mut h = http("https://example.com");
            h.method = bad.into();
            let e = err(Action::Http(h));
            assert_eq!(e.field, "action.http.method");
            assert!(
                e.message.contains("is not one of GET, POST"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn method_defaults_to_post_when_deserialized() {
        let a: Action =
            serde_json::from_str(r#"{"kind":"http","url":"https://example.com"}"#).unwrap();
        assert_eq!(a, Action::Http(http("https://example.com")));
    }

    #[test]
    fn header_names_and_values_must_be_valid() {
        for bad in ["", "Bad Name", "Bad:Name", "Ünïcode", "a\nb"] {
            let e = err(with_headers(&[(bad, "v")]));
            assert_eq!(e.field, "action.http.headers", "{bad:?}");
        }
        let e = err(with_headers(&[("Bad Name", "v")]));
        assert_eq!(e.message, r#""Bad Name" is not a valid header name"#);
        for bad in ["a\r\nInjected: yes", "nul\0", "bell\x07", "café"] {
            let e = err(with_headers(&[("X-Ok", bad)]));
            assert_eq!(e.field, "action.http.headers");
            assert_eq!(
                e.message,
                r#"the value of "X-Ok" has a control or non-ascii character"#
            );
        }
    }

    #[test]
    fn reserved_and_client_owned_headers_are_refused() {
        for name in [
            "Idempotency-Key",
            "idempotency-key",
            "traceparent",
            "TraceParent",
            "X-Meridian-Attempt",
            "x-meridian-anything",
        ] {
            let e = err(with_headers(&[(name, "v")]));
            assert_eq!(e.field, "action.http.headers");
            assert_eq!(e.message, format!("{name:?} is reserved for meridian"));
        }
        for name in ["Host", "content-length", "Transfer-Encoding", "Connection"] {
            let e = err(with_headers(&[(name, "v")]));
            assert_eq!(e.message, format!("{name:?} is set by the http client"));
        }
        // Close to reserved, but not: fine.
        with_headers(&[("X-Meridianish", "v"), ("Idempotency-Keys", "v")])
            .validate()
            .unwrap();
    }

    #[test]
    fn headers_are_bounded_in_count_and_bytes() {
        let names: Vec<String> = (0..=HEADERS_MAX).map(|i| format!("X-H{i}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        with_headers(&many[..HEADERS_MAX]).validate().unwrap();
        let e = err(with_headers(&many));
        assert_eq!(e.field, "action.http.headers");
        assert_eq!(e.message, "has 65 entries, more than 64");

        let big = "v".repeat(HEADERS_BYTES_MAX);
        let e = err(with_headers(&[("X-Big", &big)]));
        assert_eq!(e.field, "action.http.headers");
        assert_eq!(e.message, "are 16389 bytes, more than 16384");
    }

    #[test]
    fn body_is_bounded() {
        let mut h = http("https://example.com");
        h.body = "b".repeat(BODY_BYTES_MAX);
        Action::Http(h.clone()).validate().unwrap();
        h.body.push('b');
        let e = err(Action::Http(h));
        assert_eq!(e.field, "action.http.body");
        assert_eq!(e.message, "is 262145 bytes, more than 262144");
    }

    #[test]
    fn argv_must_be_non_empty_and_bounded() {
        let e = err(Action::Command(command(&[])));
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("action.command.argv", "is empty")
        );
        let e = err(Action::Command(command(&["", "x"])));
        assert_eq!(e.message, "has an empty program (argv[0])");
        let e = err(Action::Command(command(&["echo", "a\0b"])));
        assert_eq!(e.message, "argv[1] has a nul byte");

        let many = vec!["x"; ARGV_MAX + 1];
        Action::Command(command(&many[..ARGV_MAX]))
            .validate()
            .unwrap();
        let e = err(Action::Command(command(&many)));
        assert_eq!(e.message, "has 257 entries, more than 256");

        let big = "a".repeat(ARGV_BYTES_MAX);
        let e = err(Action::Command(command(&["echo", &big])));
        assert_eq!(e.field, "action.command.argv");
        assert_eq!(e.message, "is 65540 bytes, more than 65536");
    }

    #[test]
    fn env_names_and_values_must_be_valid() {
        for bad in ["", "1ABC", "A-B", "A=B", "É"] {
            let e = err(with_env(&[(bad, "v")]));
            assert_eq!(e.field, "action.command.env", "{bad:?}");
            assert!(
                e.message.contains("is not a valid variable name"),
                "{}",
                e.message
            );
        }
        let e = err(with_env(&[("OK", "a\0b")]));
        assert_eq!(e.message, r#"the value of "OK" has a nul byte"#);
        let e = err(with_env(&[("OK", "1"), ("OK", "2")]));
        assert_eq!(e.message, r#""OK" is given twice"#);
    }

    #[test]
    fn env_may_not_override_meridian_variables() {
        for name in [ENV_FIRING_ID, ENV_ATTEMPT, "MERIDIAN_OTHER"] {
            let e = err(with_env(&[(name, "x")]));
            assert_eq!(e.field, "action.command.env");
            assert_eq!(e.message, format!("{name:?} is reserved for meridian"));
        }
        // Environment names are case-sensitive: this one is the user's.
        with_env(&[("meridian_firing_id", "x")]).validate().unwrap();
    }

    #[test]
    fn env_is_bounded() {
        let names: Vec<String> = (0..=ENV_MAX).map(|i| format!("V{i}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        with_env(&many[..ENV_MAX]).validate().unwrap();
        let e = err(with_env(&many));
        assert_eq!(e.message, "has 129 entries, more than 128");
        let big = "v".repeat(ENV_BYTES_MAX);
        let e = err(with_env(&[("BIG", &big)]));
        assert_eq!(e.message, "is 65539 bytes, more than 65536");
    }

    #[test]
    fn working_dir_must_be_absolute() {
        let mut c = command(&["ls"]);
        for bad in ["", "relative/dir", "./x", "~/x"] {
            c.working_dir = Some(bad.into());
            let e = err(Action::Command(c.clone()));
            assert_eq!(e.field, "action.command.working_dir");
            assert_eq!(e.message, format!("{bad:?} is not an absolute path"));
        }
        c.working_dir = Some("/a\0b".into());
        assert_eq!(err(Action::Command(c.clone())).message, "has a nul byte");
    }

    #[test]
    fn serde_shape_is_tagged_by_kind() {
        let a = Action::Command(Command {
            argv: vec!["echo".into(), "hi".into()],
            env: vec![("A".into(), "1".into())],
            working_dir: None,
        });
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "command", "argv": ["echo", "hi"], "env": [["A", "1"]], "working_dir": null})
        );
        assert_eq!(serde_json::from_value::<Action>(json).unwrap(), a);
        assert_eq!(
            serde_json::to_value(Action::Noop).unwrap(),
            serde_json::json!({"kind": "noop"})
        );
        let h: Action = serde_json::from_str(
            r#"{"kind":"http","method":"PUT","url":"https://e.com","headers":[["A","b"]],"body":"x"}"#,
        )
        .unwrap();
        assert!(matches!(h, Action::Http(Http { ref method, .. }) if method == "PUT"));
    }

    #[test]
    fn long_input_is_cut_in_messages() {
        let url = format!("ftp://{}", "x".repeat(500));
        let e = err(Action::Http(http(&url)));
        assert!(e.message.len() < 200, "{}", e.message);
        assert!(e.message.contains('…'));
    }
}
