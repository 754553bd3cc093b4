//! A tiny HTTP/1.1 server on 127.0.0.1 for the executors' tests: records each request
//! and answers with a scripted [`Reply`]. Test-only; it must not grow into a real server
//! (one request per connection, `Content-Length` bodies only).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A request as it arrived.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of header `name` (any case), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What the server does with a request.
pub(crate) enum Reply {
    Status {
        code: u16,
        body: String,
    },
    Redirect(String),
    /// Never answer.
    Hang,
    /// Send a 200's head and the start of its body, then nothing.
    HeadersThenHang,
}

impl Reply {
    pub fn status(code: u16, body: &str) -> Self {
        Reply::Status {
            code,
            body: body.to_owned(),
        }
    }

    pub fn redirect(location: &str) -> Self {
        Reply::Redirect(location.to_owned())
    }
}

type Script = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A running server; stops (with its open connections) when dropped.
pub(crate) struct TestServer {
    addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(script: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let recorded = requests.clone();
        let accept = tokio::spawn(async move {
            // Connections live in the set, so aborting this task drops them all.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                connections.spawn(serve(stream, script.clone(), recorded.clone()));
            }
        });
        Self {
            addr,
            requests,
            accept,
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve(mut stream: TcpStream, script: Script, recorded: Arc<Mutex<Vec<Request>>>) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let reply = script(&request);
    recorded.lock().unwrap().push(request);
    let response = match reply {
        Reply::Status { code, body } => {
            // 204 and 304 carry no body.
            let body = if matches!(code, 204 | 304) { "" } else { &body };
            format!(
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        Reply::Redirect(location) => format!(
            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        Reply::HeadersThenHang => {
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial";
            let _ = stream.write_all(head.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// One request, or `None` if the peer closed or sent something else than HTTP/1.1.
async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}
