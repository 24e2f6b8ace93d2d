//! The control messages a client may send to change its subscriptions, or
//! to say where it resumes.

use serde::Deserialize;

/// A control message, told apart by its `action`:
/// `{"action":"subscribe"|"unsubscribe","event":"<name>"}` and
/// `{"action":"resume","position":"<position>"}`, each with
/// `"channel":"<name>"` where a socket serves several channels.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum Control {
    Subscribe {
        event: String,
        #[serde(default)]
        channel: Option<String>,
    },
    Unsubscribe {
        event: String,
        #[serde(default)]
        channel: Option<String>,
    },
    /// The client's last position on `channel` (none: it has seen nothing
    /// yet, and starts live).
    Resume {
        #[serde(default)]
        position: Option<String>,
        #[serde(default)]
        channel: Option<String>,
    },
}

/// How a text message reads to the session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    Control(Control),
    /// A JSON object with an `action` key that is not a valid control
    /// message: the client meant one and got it wrong.
    Malformed,
    /// Anything else: the application's business.
    Other,
}

/// The shape of a message that claims to be a control message: one with an
/// `action` key, whatever its value (`null` included).
#[derive(Deserialize)]
struct Probe {
    #[serde(default, deserialize_with = "present")]
    action: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(value: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(value).map(|_| true)
}

/// Why a malformed control message closed the socket: within a close
/// frame's 123 bytes.
pub(crate) const EXPECTED: &str = r#"malformed control message; expected {"action":"subscribe"|"unsubscribe","event":"<name>"} or {"action":"resume",..}"#;

pub(crate) fn parse(text: &str) -> Parsed {
    // serde reads a struct from a JSON array too; a control message is an
    // object.
    if !text.trim_start().starts_with('{') {
        return Parsed::Other;
    }
    // The light look first: most messages of a socket with a handler are
    // the application's, and are parsed once here, not twice.
    match serde_json::from_str::<Probe>(text) {
        Ok(Probe { action: true }) => match serde_json::from_str::<Control>(text) {
            Ok(control) => Parsed::Control(control),
            Err(_) => Parsed::Malformed,
        },
        _ => Parsed::Other,
    }
}

/// An error frame for this client: `{"type":"error","payload":{"message":..}}`.
pub(crate) fn error_frame(message: &str) -> crate::Frame {
    let mut text = String::from(r#"{"type":"error","payload":{"message":"#);
    crate::push_json_string(&mut text, message);
    text.push_str("}}");
    crate::Frame::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_control_messages_from_the_applications() {
        assert_eq!(
            parse(r#"{"action":"subscribe","event":"e"}"#),
            Parsed::Control(Control::Subscribe {
                event: "e".into(),
                channel: None
            })
        );
        assert_eq!(
            parse(r#"{"action":"unsubscribe","event":"e","channel":"chat"}"#),
            Parsed::Control(Control::Unsubscribe {
                event: "e".into(),
                channel: Some("chat".into())
            })
        );
        assert_eq!(parse(r#"{"action":"jump","event":"e"}"#), Parsed::Malformed);
        assert_eq!(parse(r#"{"action":null}"#), Parsed::Malformed);
        assert_eq!(parse(r#"{"action":"subscribe"}"#), Parsed::Malformed);
        assert_eq!(
            parse(r#"{"action":"subscribe","event":"e","extra":1}"#),
            Parsed::Malformed
        );
        assert_eq!(parse(r#"{"type":"request","key":1}"#), Parsed::Other);
        assert_eq!(parse("hello"), Parsed::Other);
        assert_eq!(parse("[1,2]"), Parsed::Other);
        assert_eq!(parse(r#"["subscribe","e"]"#), Parsed::Other);
    }

    #[test]
    fn the_close_reason_fits_a_close_frame() {
        assert!(EXPECTED.len() <= 123, "{} bytes", EXPECTED.len());
    }

    #[test]
    fn reads_resume_messages() {
        assert_eq!(
            parse(r#"{"action":"resume","position":"17a-3"}"#),
            Parsed::Control(Control::Resume {
                position: Some("17a-3".into()),
                channel: None
            })
        );
        assert_eq!(
            parse(r#"{"action":"resume","position":"p","channel":"chat"}"#),
            Parsed::Control(Control::Resume {
                position: Some("p".into()),
                channel: Some("chat".into())
            })
        );
        assert_eq!(
            parse(r#"{"action":"resume"}"#),
            Parsed::Control(Control::Resume {
                position: None,
                channel: None
            })
        );
        assert_eq!(
            parse(r#"{"action":"resume","position":5}"#),
            Parsed::Malformed
        );
        assert_eq!(
            parse(r#"{"action":"resume","event":"e"}"#),
            Parsed::Malformed
        );
    }
}
