//! The near-cache's view of a ringkv cluster (or a single Redis-compatible server): which
//! member owns each of the 16384 slots (`CLUSTER SLOTS`, corrected by `-MOVED`), and one
//! pipelined RESP3 [`Link`] per member, made on first use and remade after it breaks.

pub(crate) mod link;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use redis_protocol::resp3::types::BytesFrame;
use ringkv_store::slot::SLOT_COUNT;

use crate::error::NearCacheError;
pub(crate) use link::{Link, PushSink, Reply, SlotBits, error_text};

/// Attempts at one call while members answer `-MOVED` or `-TRYAGAIN`.
const REDIRECT_ATTEMPTS: u32 = 6;

/// Timeouts for reaching members.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

/// Slot owners: an index into `members` per slot.
struct SlotMap {
    members: Vec<SocketAddr>,
    owner: Vec<u16>,
}

impl SlotMap {
    /// Every slot on one server (a standalone node).
    fn single(addr: SocketAddr) -> Self {
        SlotMap {
            members: vec![addr],
            owner: vec![0; usize::from(SLOT_COUNT)],
        }
    }

    fn owner(&self, slot: u16) -> SocketAddr {
        self.members[usize::from(self.owner[usize::from(slot)])]
    }

    fn set_owner(&mut self, slot: u16, addr: SocketAddr) {
        let index = match self.members.iter().position(|m| *m == addr) {
            Some(index) => index,
            None => {
                self.members.push(addr);
                self.members.len() - 1
            }
        };
        self.owner[usize::from(slot)] = index as u16;
    }
}

/// The cluster as the near-cache reaches it.
pub(crate) struct Remote {
    seeds: Vec<SocketAddr>,
    slots: RwLock<SlotMap>,
    links: Mutex<HashMap<SocketAddr, Arc<Link>>>,
    /// One connect at a time: a burst of misses to a new member makes one link.
    connecting: tokio::sync::Mutex<()>,
    sink: Arc<dyn PushSink>,
    timeouts: Timeouts,
    /// A slot-map refresh is running: a burst of `-MOVED` (a slot migrating under load)
    /// makes one CLUSTER SLOTS, not one per redirected request.
    refreshing: std::sync::atomic::AtomicBool,
}

impl Remote {
    /// Reaches the cluster through the first seed that answers and learns its slots.
    pub async fn connect(
        seeds: Vec<SocketAddr>,
        sink: Arc<dyn PushSink>,
        timeouts: Timeouts,
    ) -> Result<Remote, NearCacheError> {
        let first = *seeds.first().ok_or(NearCacheError::NoSeeds)?;
        let remote = Remote {
            slots: RwLock::new(SlotMap::single(first)),
            seeds,
            links: Mutex::new(HashMap::new()),
            connecting: tokio::sync::Mutex::new(()),
            sink,
            timeouts,
            refreshing: std::sync::atomic::AtomicBool::new(false),
        };
        remote.refresh_slots().await?;
        Ok(remote)
    }

    /// Sends `commands` to the owner of `slot`, back to back on its link, following
    /// `-MOVED` and waiting out `-TRYAGAIN`. Returns the link that answered and the
    /// replies; an error reply other than a redirection is the caller's to read.
    pub async fn call(
        &self,
        slot: u16,
        commands: &[Vec<Bytes>],
    ) -> Result<(Arc<Link>, Vec<Reply>), NearCacheError> {
        let mut last = String::new();
        for attempt in 0..REDIRECT_ATTEMPTS {
            let addr = self.slots.read().owner(slot);
            let link = self.link(addr).await?;
            let replies = link.call(commands, self.timeouts.request).await?;
            let Some(error) = replies.first().and_then(|r| error_text(&r.frame)) else {
                return Ok((link, replies));
            };
            if let Some(target) = moved_to(&error) {
                self.slots.write().set_owner(slot, target);
                // The table changed: learn the rest of it, once however many requests
                // were redirected (a failed refresh keeps the corrected entry; the next
                // MOVED corrects the next one).
                if let Some(_refreshing) = Refreshing::start(&self.refreshing)
                    && let Err(error) = self.refresh_slots().await
                {
                    tracing::debug!(%error, "slot refresh after MOVED failed");
                }
            } else if error.starts_with("TRYAGAIN") || error.starts_with("LOADING") {
                tokio::time::sleep(Duration::from_millis(10 << attempt.min(4))).await;
            } else {
                return Ok((link, replies));
            }
            last = error;
        }
        Err(NearCacheError::Redirects { slot, last })
    }

    /// How long a member may take to answer.
    pub fn request_timeout(&self) -> Duration {
        self.timeouts.request
    }

    /// The link to `addr`, connecting when there is none or it broke.
    async fn link(&self, addr: SocketAddr) -> Result<Arc<Link>, NearCacheError> {
        if let Some(link) = self.live_link(addr) {
            return Ok(link);
        }
        let _one = self.connecting.lock().await;
        if let Some(link) = self.live_link(addr) {
            return Ok(link);
        }
        let link = Arc::new(Link::connect(addr, self.sink.clone(), self.timeouts.connect).await?);
        self.links.lock().insert(addr, link.clone());
        Ok(link)
    }

    fn live_link(&self, addr: SocketAddr) -> Option<Arc<Link>> {
        self.links
            .lock()
            .get(&addr)
            .filter(|link| link.is_alive())
            .cloned()
    }

    /// Asks a member for `CLUSTER SLOTS` (known members first, then the seeds); a server
    /// without cluster support owns every slot itself.
    async fn refresh_slots(&self) -> Result<(), NearCacheError> {
        let mut candidates: Vec<SocketAddr> = self.slots.read().members.clone();
        candidates.extend(self.seeds.iter().copied());
        candidates.dedup();
        let mut last_error = NearCacheError::NoSeeds;
        let command = vec![Bytes::from_static(b"CLUSTER"), Bytes::from_static(b"SLOTS")];
        for addr in candidates {
            let link = match self.link(addr).await {
                Ok(link) => link,
                Err(error) => {
                    last_error = error;
                    continue;
                }
            };
            let reply = match link
                .call(std::slice::from_ref(&command), self.timeouts.request)
                .await
            {
                Ok(mut replies) => replies.remove(0).frame,
                Err(error) => {
                    last_error = error;
                    continue;
                }
            };
            if let Some(error) = error_text(&reply) {
                if error.contains("cluster support disabled") {
                    *self.slots.write() = SlotMap::single(addr);
                    return Ok(());
                }
                last_error = NearCacheError::Server(error);
                continue;
            }
            match parse_cluster_slots(&reply, addr) {
                Some(map) => {
                    *self.slots.write() = map;
                    return Ok(());
                }
                None => {
                    last_error = NearCacheError::UnexpectedReply {
                        command: "CLUSTER SLOTS",
                        reply: format!("{reply:?}"),
                    }
                }
            }
        }
        Err(last_error)
    }
}

/// The one slot-map refresh running; ends when dropped, so a cancelled caller frees it.
struct Refreshing<'a>(&'a std::sync::atomic::AtomicBool);

impl<'a> Refreshing<'a> {
    fn start(flag: &'a std::sync::atomic::AtomicBool) -> Option<Refreshing<'a>> {
        (!flag.swap(true, std::sync::atomic::Ordering::SeqCst)).then_some(Refreshing(flag))
    }
}

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The address in `MOVED <slot> <host:port>`.
fn moved_to(error: &str) -> Option<SocketAddr> {
    let rest = error.strip_prefix("MOVED ")?;
    let (_, addr) = rest.split_once(' ')?;
    addr.trim().parse().ok()
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id…], replicas…]…]`. An empty host means
/// the member that answered. Slots left out keep the answering member as their owner:
/// it redirects.
fn parse_cluster_slots(reply: &BytesFrame, answered: SocketAddr) -> Option<SlotMap> {
    let BytesFrame::Array { data: ranges, .. } = reply else {
        return None;
    };
    let mut map = SlotMap::single(answered);
    for range in ranges {
        let BytesFrame::Array { data: fields, .. } = range else {
            return None;
        };
        let (Some(start), Some(end), Some(BytesFrame::Array { data: primary, .. })) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return None;
        };
        let (start, end) = (integer(start)?, integer(end)?);
        let host = match primary.first()? {
            BytesFrame::BlobString { data, .. } | BytesFrame::SimpleString { data, .. } => {
                String::from_utf8_lossy(data).into_owned()
            }
            _ => return None,
        };
        let port = integer(primary.get(1)?)?;
        let addr = if host.is_empty() || host == "?" {
            SocketAddr::new(answered.ip(), u16::try_from(port).ok()?)
        } else {
            format!("{host}:{port}")
                .parse()
                .ok()
                .or_else(|| format!("[{host}]:{port}").parse().ok())?
        };
        if start > end || end >= i64::from(SLOT_COUNT) || start < 0 {
            return None;
        }
        for slot in start..=end {
            map.set_owner(slot as u16, addr);
        }
    }
    Some(map)
}

fn integer(frame: &BytesFrame) -> Option<i64> {
    match frame {
        BytesFrame::Number { data, .. } => Some(*data),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(text: &str) -> BytesFrame {
        BytesFrame::BlobString {
            data: Bytes::copy_from_slice(text.as_bytes()),
            attributes: None,
        }
    }

    fn number(n: i64) -> BytesFrame {
        BytesFrame::Number {
            data: n,
            attributes: None,
        }
    }

    fn array(items: Vec<BytesFrame>) -> BytesFrame {
        BytesFrame::Array {
            data: items,
            attributes: None,
        }
    }

    #[test]
    fn cluster_slots_assign_each_range_to_its_primary() {
        let answered: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let reply = array(vec![
            array(vec![
                number(0),
                number(99),
                array(vec![blob("127.0.0.2"), number(7001), blob("id")]),
                array(vec![blob("127.0.0.3"), number(7002), blob("replica")]),
            ]),
            array(vec![
                number(100),
                number(16383),
                array(vec![blob(""), number(7000)]),
            ]),
        ]);
        let map = parse_cluster_slots(&reply, answered).expect("a valid reply");
        assert_eq!(map.owner(0), "127.0.0.2:7001".parse().unwrap());
        assert_eq!(map.owner(99), "127.0.0.2:7001".parse().unwrap());
        assert_eq!(map.owner(100), answered);
        assert_eq!(map.owner(16383), answered);
    }

    #[test]
    fn a_cluster_slots_reply_out_of_range_is_refused() {
        let answered: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let reply = array(vec![array(vec![
            number(0),
            number(16384),
            array(vec![blob("127.0.0.2"), number(7001)]),
        ])]);
        assert!(parse_cluster_slots(&reply, answered).is_none());
        assert!(parse_cluster_slots(&blob("nonsense"), answered).is_none());
    }

    #[test]
    fn one_refresh_runs_at_a_time_and_a_dropped_one_frees_the_next() {
        let flag = std::sync::atomic::AtomicBool::new(false);
        let first = Refreshing::start(&flag).expect("the first refresh starts");
        assert!(
            Refreshing::start(&flag).is_none(),
            "a second waits its turn"
        );
        drop(first);
        assert!(
            Refreshing::start(&flag).is_some(),
            "a cancelled refresh frees the flag"
        );
    }

    #[test]
    fn moved_names_the_new_owner() {
        assert_eq!(
            moved_to("MOVED 3999 127.0.0.1:6381"),
            Some("127.0.0.1:6381".parse().unwrap())
        );
        assert_eq!(moved_to("ASK 3999 127.0.0.1:6381"), None);
        assert_eq!(moved_to("MOVED 3999 nowhere"), None);
    }
}
