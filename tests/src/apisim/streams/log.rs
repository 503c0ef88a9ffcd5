//! `pods/log`: the container's log is the pod annotation
//! `apisim.mcp-warden.io/log` (newline-separated) or a few generated lines;
//! `follow=true` keeps appending a line every [`FOLLOW_INTERVAL`], each
//! flushed as its own chunk, up to [`FOLLOW_MAX_LINES`] or until the client
//! goes away.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Response;
use hyper::body::{Body, Frame};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use mcp_warden_shared::status::{Reason, Status};
use tokio::sync::mpsc;

use super::{PodRef, ResBody, resolve_container};
use mcp_warden_shared::attrs::Query;

/// Pod annotation holding the fake log text.
pub const LOG_ANNOTATION: &str = "apisim.mcp-warden.io/log";
/// Lines generated when the pod has no log annotation.
pub const GENERATED_LINES: usize = 3;
/// Pause between followed lines.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
/// Followed lines emitted before the stream ends by itself.
pub const FOLLOW_MAX_LINES: usize = 50;

/// The log lines (without newline) of `container` before any following.
pub fn initial_lines(pod: &PodRef, container: &str) -> Vec<String> {
    match pod.pod["metadata"]["annotations"][LOG_ANNOTATION].as_str() {
        Some(text) => text.lines().map(str::to_string).collect(),
        None => (1..=GENERATED_LINES)
            .map(|n| generated(pod, container, n))
            .collect(),
    }
}

fn generated(pod: &PodRef, container: &str, n: usize) -> String {
    format!("line {n} from {}/{container}", pod.name)
}

/// Serves `GET .../pods/NAME/log`.
pub async fn serve(pod: &PodRef, q: &Query) -> Result<Response<ResBody>, Status> {
    let container = resolve_container(pod, q.get("container"))?;
    if q.flag("previous") {
        return Err(Status::new(
            Reason::BadRequest,
            format!(
                "previous terminated container \"{container}\" in pod \"{}\" not found",
                pod.name
            ),
        ));
    }
    let tail = int_param(q, "tailLines")?;
    if tail.is_some_and(|t| t < 0) {
        return Err(Status::new(
            Reason::Invalid,
            "tailLines: Invalid value: must be greater than or equal to 0",
        ));
    }
    let limit = int_param(q, "limitBytes")?;
    if limit.is_some_and(|l| l < 1) {
        return Err(Status::new(
            Reason::Invalid,
            "limitBytes: Invalid value: must be greater than 0",
        ));
    }
    // Every line is "from now", so any positive window includes them all.
    if int_param(q, "sinceSeconds")?.is_some_and(|s| s < 1) {
        return Err(Status::new(
            Reason::Invalid,
            "sinceSeconds: Invalid value: must be greater than 0",
        ));
    }
    let mut budget = Budget(limit.and_then(|l| usize::try_from(l).ok()));
    let follow = q.flag("follow");
    let timestamps = q.flag("timestamps");
    let mut lines = initial_lines(pod, &container);
    let total = lines.len();
    if let Some(t) = tail {
        let keep = usize::try_from(t).unwrap_or(usize::MAX).min(lines.len());
        lines.drain(..lines.len() - keep);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let pod = pod.clone();
    tokio::spawn(async move {
        for l in lines {
            let Some(chunk) = budget.take(render(&l, timestamps)) else {
                return;
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        for i in 1..=FOLLOW_MAX_LINES {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_INTERVAL) => {}
                _ = tx.closed() => return,
            }
            let line = generated(&pod, &container, total + i);
            let Some(chunk) = budget.take(render(&line, timestamps)) else {
                return;
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(ChanBody(rx).boxed());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

/// An integer query parameter; 400 when it is not one.
fn int_param(q: &Query, key: &str) -> Result<Option<i64>, Status> {
    q.get(key)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                Status::new(
                    Reason::BadRequest,
                    format!("{key}: invalid value {v:?}: must be an integer"),
                )
            })
        })
        .transpose()
}

/// What is left of `limitBytes` (`None`: unlimited).
struct Budget(Option<usize>);

impl Budget {
    /// The part of `chunk` still within the limit; `None` once it is used up.
    fn take(&mut self, mut chunk: Bytes) -> Option<Bytes> {
        match &mut self.0 {
            None => Some(chunk),
            Some(0) => None,
            Some(left) => {
                chunk.truncate(*left);
                *left -= chunk.len();
                Some(chunk)
            }
        }
    }
}

fn render(line: &str, timestamps: bool) -> Bytes {
    if timestamps {
        Bytes::from(format!(
            "{} {line}\n",
            rfc3339_nano(time::OffsetDateTime::now_utc())
        ))
    } else {
        Bytes::from(format!("{line}\n"))
    }
}

/// kubelet's `RFC3339NanoFixed`: always nine fractional digits, `Z`.
pub fn rfc3339_nano(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// A body fed chunk by chunk from a channel.
struct ChanBody(mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(ann: Option<&str>) -> PodRef {
        let mut p =
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        if let Some(a) = ann {
            p["metadata"]["annotations"] = serde_json::json!({ LOG_ANNOTATION: a });
        }
        PodRef {
            namespace: "default".into(),
            name: "p".into(),
            pod: p,
        }
    }

    async fn body(q: &str, p: &PodRef) -> String {
        let resp = serve(p, &Query::parse(q)).await.unwrap();
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn lines_tail_and_timestamps() {
        assert_eq!(
            body("", &pod(None)).await,
            "line 1 from p/c\nline 2 from p/c\nline 3 from p/c\n"
        );
        assert_eq!(body("tailLines=1", &pod(Some("a\nb\nc"))).await, "c\n");
        assert_eq!(body("tailLines=0", &pod(Some("a\nb"))).await, "");
        let ts = body("timestamps=true&container=c", &pod(Some("x"))).await;
        let (stamp, rest) = ts.split_once(' ').unwrap();
        assert_eq!(rest, "x\n");
        assert_eq!(stamp.len(), "2024-01-02T03:04:05.123456789Z".len());
        assert!(stamp.ends_with('Z'));
        assert_eq!(
            serve(&pod(None), &Query::parse("container=zz"))
                .await
                .unwrap_err()
                .code(),
            400
        );
        assert_eq!(
            body("limitBytes=6", &pod(Some("abc\ndef"))).await,
            "abc\nde"
        );
        assert_eq!(
            serve(&pod(None), &Query::parse("limitBytes=0"))
                .await
                .unwrap_err()
                .code(),
            422
        );
        assert_eq!(
            serve(&pod(None), &Query::parse("tailLines=x"))
                .await
                .unwrap_err()
                .code(),
            400
        );
    }
}
