//! Just enough RESP2 to drive a throwaway Redis from tests: one command per connection,
//! a command array out, one reply in. Not a client library: no pipelining, no pooling,
//! blocking I/O with timeouts so that a wedged server fails a test instead of hanging it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::TestkitError;

/// Deepest nesting of arrays accepted in a reply (`CLUSTER SLOTS` needs 3).
const MAX_DEPTH: usize = 8;
/// Largest bulk string or array accepted, so that a garbled length cannot allocate the
/// machine away.
const MAX_LEN: usize = 64 * 1024 * 1024;

/// One reply from Redis, as returned by [`RedisServer::query`](crate::RedisServer::query).
///
/// A top-level error reply is returned as [`TestkitError::Redis`] instead; errors nested
/// in an array (as in an `EXEC` reply) stay here as [`Reply::Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A simple string (`+OK`, `+PONG`).
    Simple(String),
    /// An error nested in an array, without its leading `-`.
    Error(String),
    /// An integer (`:42`).
    Integer(i64),
    /// A bulk string, decoded as UTF-8 (invalid bytes become U+FFFD).
    Bulk(String),
    /// A nil bulk string or nil array (`GET` of a missing key).
    Nil,
    /// An array (`CLUSTER SLOTS`, `KEYS *`).
    Array(Vec<Self>),
}

impl Reply {
    /// The reply as text, the way `redis-cli --raw` prints it: strings as they are,
    /// integers in decimal, nil as the empty string, arrays one element per line.
    pub fn to_text(&self) -> String {
        match self {
            Self::Simple(s) | Self::Error(s) | Self::Bulk(s) => s.clone(),
            Self::Integer(n) => n.to_string(),
            Self::Nil => String::new(),
            Self::Array(items) => items
                .iter()
                .map(Self::to_text)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// The elements of an array reply, or `None` for any other reply.
    pub fn as_array(&self) -> Option<&[Self]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The value of an integer reply, or `None` for any other reply.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Self::Integer(n) => Some(*n),
            _ => None,
        }
    }
}

/// Sends `args` as one command to `addr` and reads its reply.
pub(crate) fn request(
    addr: SocketAddr,
    args: &[&str],
    timeout: Duration,
) -> Result<Reply, TestkitError> {
    let command = args.first().copied().unwrap_or("").to_owned();
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| TestkitError::Connect { addr, source })?;
    let transport = |source: io::Error| TestkitError::Transport {
        addr,
        command: command.clone(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(transport)?;
    stream.set_write_timeout(Some(timeout)).map_err(transport)?;
    stream.set_nodelay(true).map_err(transport)?;
    (&stream).write_all(&encode(args)).map_err(transport)?;

    let mut reader = BufReader::new(&stream);
    match read_reply(&mut reader, 0) {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(message)) => Err(TestkitError::Redis {
            addr,
            command,
            message,
        }),
        Err(ReadError::Io(source)) => Err(transport(source)),
        Err(ReadError::Malformed(message)) => Err(TestkitError::Protocol {
            addr,
            command,
            message,
        }),
    }
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[derive(Debug)]
enum ReadError {
    Io(io::Error),
    Malformed(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Reads one reply. The outer `Result` is a transport or protocol failure; the inner one
/// separates a top-level error reply (`Err(message)`) from everything else.
fn read_reply<R: BufRead>(
    reader: &mut R,
    depth: usize,
) -> Result<Result<Reply, String>, ReadError> {
    let line = read_line(reader)?;
    let Some((kind, rest)) = line.split_at_checked(1) else {
        return Err(ReadError::Malformed("empty line".into()));
    };
    let reply = match kind {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => return Ok(Err(rest.to_owned())),
        ":" => Reply::Integer(
            rest.parse()
                .map_err(|_| ReadError::Malformed(format!("bad integer {rest:?}")))?,
        ),
        "$" => match parse_len(rest)? {
            None => Reply::Nil,
            Some(len) => {
                let mut buf = vec![0; len + 2];
                reader.read_exact(&mut buf)?;
                if !buf.ends_with(b"\r\n") {
                    return Err(ReadError::Malformed("bulk string not ended by CRLF".into()));
                }
                buf.truncate(len);
                Reply::Bulk(String::from_utf8_lossy(&buf).into_owned())
            }
        },
        "*" => match parse_len(rest)? {
            None => Reply::Nil,
            Some(_) if depth >= MAX_DEPTH => {
                return Err(ReadError::Malformed(format!(
                    "arrays nested deeper than {MAX_DEPTH}"
                )));
            }
            Some(len) => {
                let mut items = Vec::with_capacity(len.min(1024));
                for _ in 0..len {
                    items.push(match read_reply(reader, depth + 1)? {
                        Ok(item) => item,
                        Err(message) => Reply::Error(message),
                    });
                }
                Reply::Array(items)
            }
        },
        other => {
            return Err(ReadError::Malformed(format!(
                "unknown reply type {other:?} in {line:?}"
            )));
        }
    };
    Ok(Ok(reply))
}

/// Reads one CRLF-terminated line, without its terminator.
fn read_line<R: BufRead>(reader: &mut R) -> Result<String, ReadError> {
    let mut buf = Vec::new();
    // Bounded: a line (a simple string, error or length) is short.
    reader.take(64 * 1024).read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Err(ReadError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a reply",
        )));
    }
    if !buf.ends_with(b"\r\n") {
        return Err(ReadError::Malformed("line not ended by CRLF".into()));
    }
    buf.truncate(buf.len() - 2);
    String::from_utf8(buf).map_err(|_| ReadError::Malformed("line is not UTF-8".into()))
}

/// A bulk or array length: `None` for `-1` (nil).
fn parse_len(text: &str) -> Result<Option<usize>, ReadError> {
    if text == "-1" {
        return Ok(None);
    }
    match text.parse::<usize>() {
        Ok(len) if len <= MAX_LEN => Ok(Some(len)),
        _ => Err(ReadError::Malformed(format!("bad length {text:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Result<Reply, String>, ReadError> {
        read_reply(&mut &bytes[..], 0)
    }

    #[test]
    fn encodes_a_command_as_an_array_of_bulk_strings() {
        assert_eq!(
            encode(&["SET", "k", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn parses_every_reply_type() {
        assert_eq!(
            parse(b"+PONG\r\n").ok(),
            Some(Ok(Reply::Simple("PONG".into())))
        );
        assert_eq!(parse(b"-ERR nope\r\n").ok(), Some(Err("ERR nope".into())));
        assert_eq!(parse(b":-7\r\n").ok(), Some(Ok(Reply::Integer(-7))));
        assert_eq!(parse(b"$-1\r\n").ok(), Some(Ok(Reply::Nil)));
        assert_eq!(
            parse(b"$4\r\na\r\nb\r\n").ok(),
            Some(Ok(Reply::Bulk("a\r\nb".into())))
        );
        let nested = b"*2\r\n*3\r\n:0\r\n:5460\r\n*2\r\n$9\r\n127.0.0.1\r\n:7001\r\n-ERR x\r\n";
        let reply = parse(nested).ok().and_then(Result::ok);
        assert_eq!(
            reply,
            Some(Reply::Array(vec![
                Reply::Array(vec![
                    Reply::Integer(0),
                    Reply::Integer(5460),
                    Reply::Array(vec![Reply::Bulk("127.0.0.1".into()), Reply::Integer(7001)]),
                ]),
                Reply::Error("ERR x".into()),
            ]))
        );
        assert_eq!(
            reply.map(|r| r.to_text()),
            Some("0\n5460\n127.0.0.1\n7001\nERR x".into())
        );
    }

    #[test]
    fn rejects_malformed_replies() {
        for bad in [
            &b"?x\r\n"[..],
            b"+no crlf\n",
            b":12a\r\n",
            b"$3\r\nabcd\r\n",
            b"$99999999999\r\n",
            b"*-2\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ReadError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(parse(b""), Err(ReadError::Io(_))));
        assert!(matches!(parse(b"$5\r\nab"), Err(ReadError::Io(_))));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(ReadError::Malformed(_))
        ));
    }
}
