//! [`EventName`]: an envelope's event name, borrowed when it is a
//! registered event's `NAME`.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;

/// The event name an [`Envelope`](super::Envelope) carries: a registered
/// event's `NAME` is borrowed (no allocation per message); a name read off
/// the wire that is not one is owned. Reads as a `&str` (it derefs to one).
///
/// ```
/// use heytom_mq::EventName;
/// let name = EventName::from("OrderPlaced");
/// assert_eq!(name, "OrderPlaced");
/// assert_eq!(name.len(), 11);
/// let owned: String = name.into();
/// assert_eq!(owned, "OrderPlaced");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventName(Cow<'static, str>);

impl EventName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned `String` (a copy only when it is borrowed).
    pub fn into_string(self) -> String {
        self.0.into_owned()
    }
}

impl Deref for EventName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for EventName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for EventName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&'static str> for EventName {
    fn from(name: &'static str) -> Self {
        EventName(Cow::Borrowed(name))
    }
}

impl From<String> for EventName {
    fn from(name: String) -> Self {
        EventName(Cow::Owned(name))
    }
}

impl From<Cow<'static, str>> for EventName {
    fn from(name: Cow<'static, str>) -> Self {
        EventName(name)
    }
}

impl From<EventName> for String {
    fn from(name: EventName) -> Self {
        name.into_string()
    }
}

impl From<&EventName> for String {
    fn from(name: &EventName) -> Self {
        name.as_str().to_owned()
    }
}

impl PartialEq<str> for EventName {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for EventName {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for EventName {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<EventName> for str {
    fn eq(&self, other: &EventName) -> bool {
        *self == *other.0
    }
}

impl PartialEq<EventName> for &str {
    fn eq(&self, other: &EventName) -> bool {
        **self == *other.0
    }
}

impl PartialEq<EventName> for String {
    fn eq(&self, other: &EventName) -> bool {
        **self == *other.0
    }
}
