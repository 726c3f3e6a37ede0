//! The membership core on a tokio UDP socket: one task owns the [`Core`], feeds it
//! packets and timers, and publishes the view on a `watch` channel. Readers take the
//! view, never the core.
//!
//! foca needs its timers delivered in the order they fall due (out-of-order timers break
//! its probe cycle), so they wait in one ordered queue inside the task instead of one
//! sleeping task each, as foca's own tokio example does.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use foca::Timer;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::membership::{BusStats, ClusterView, Core, Identity, NodeState, Output, Settings};

/// Largest datagram we accept (foca's packets stay under its 1400-byte limit, plus our
/// frame and MAC).
const MAX_DATAGRAM: usize = 2048;

enum Command {
    Leave(oneshot::Sender<()>),
    Gone(crate::ring::NodeId),
    State(NodeState),
    Settled(u64),
    ScriptsVersion(u64),
}

/// A running membership task.
#[derive(Clone)]
pub struct Bus {
    view: watch::Receiver<Arc<ClusterView>>,
    commands: mpsc::Sender<Command>,
    stats: Arc<Mutex<BusStats>>,
}

impl Bus {
    /// Binds nothing itself: takes a bound socket, starts the task, announces to the
    /// seeds.
    pub fn start(settings: Settings, socket: UdpSocket) -> std::io::Result<Bus> {
        let timing = settings.timing;
        let mut core = Core::new(settings);
        let (view_tx, view) = watch::channel(Arc::new(core.view()));
        let (commands, command_rx) = mpsc::channel(8);
        let stats = Arc::new(Mutex::new(BusStats::default()));
        let mut actor = Actor {
            socket,
            timers: BinaryHeap::new(),
            pending: HashMap::new(),
            seq: 0,
            view_tx,
            stats: stats.clone(),
        };
        let mut out = Output::default();
        core.start(&mut out);
        tokio::spawn(async move {
            actor.apply(&core, out).await;
            actor.run(core, command_rx, timing).await;
        });
        Ok(Bus {
            view,
            commands,
            stats,
        })
    }

    /// The current view, to keep.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    /// The current view, borrowed: no reference count is touched, which matters on the
    /// per-command path. Hold it briefly; the bus cannot publish while it is held.
    pub fn borrow_view(&self) -> watch::Ref<'_, Arc<ClusterView>> {
        self.view.borrow()
    }

    /// A receiver that sees every new view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// Bus counters.
    pub fn stats(&self) -> BusStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports a member whose process is gone (a peer link found nothing listening on its
    /// bus port): it is declared down now rather than after SWIM's probes. Never blocks;
    /// a report that finds the queue full is dropped (the probes still find the member).
    pub fn report_gone(&self, id: crate::ring::NodeId) {
        let _ = self.commands.try_send(Command::Gone(id));
    }

    /// Announces a new state (a joining member that holds its copies announces `Serving`).
    /// Never blocks; a full queue drops it (the caller asks again).
    pub fn announce(&self, state: NodeState) {
        let _ = self.commands.try_send(Command::State(state));
    }

    /// Announces that this member settled under the table of `version`
    /// ([`crate::membership::NodeInfo::settled`]). Never blocks; a full queue drops it
    /// (the caller asks again).
    pub fn announce_settled(&self, version: u64) {
        let _ = self.commands.try_send(Command::Settled(version));
    }

    /// Announces this member's count of script and library changes
    /// ([`crate::membership::NodeInfo::scripts_version`]). Never blocks; a full queue drops
    /// it (the caller asks again).
    pub fn announce_scripts_version(&self, version: u64) {
        let _ = self.commands.try_send(Command::ScriptsVersion(version));
    }

    /// Announces draining, tells a few members we leave, and stops the task. Waits at
    /// most `limit`.
    pub async fn leave(&self, limit: Duration) {
        let (done, left) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).await.is_ok() {
            let _ = tokio::time::timeout(limit, left).await;
        }
    }
}

struct Actor {
    socket: UdpSocket,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: HashMap<u64, Timer<Identity>>,
    seq: u64,
    view_tx: watch::Sender<Arc<ClusterView>>,
    stats: Arc<Mutex<BusStats>>,
}

impl Actor {
    async fn run(
        &mut self,
        mut core: Core,
        mut commands: mpsc::Receiver<Command>,
        timing: crate::membership::Timing,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut join = tokio::time::interval(timing.join_retry);
        let mut refresh = tokio::time::interval(timing.info_refresh);
        join.set_missed_tick_behavior(MissedTickBehavior::Delay);
        refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let mut out = Output::default();
            tokio::select! {
                command = commands.recv() => {
                    match command {
                        Some(Command::Gone(id)) => {
                            core.declare_gone(&id, &mut out);
                            self.apply(&core, out).await;
                            continue;
                        }
                        Some(Command::State(state)) => {
                            core.set_state(state, &mut out);
                            self.apply(&core, out).await;
                            continue;
                        }
                        Some(Command::Settled(version)) => {
                            core.set_settled(version, &mut out);
                            self.apply(&core, out).await;
                            continue;
                        }
                        Some(Command::ScriptsVersion(version)) => {
                            core.set_scripts_version(version, &mut out);
                            self.apply(&core, out).await;
                            continue;
                        }
                        Some(Command::Leave(done)) => {
                            core.set_state(NodeState::Draining, &mut out);
                            core.leave(&mut out);
                            self.apply(&core, out).await;
                            let _ = done.send(());
                        }
                        None => {
                            let mut out = Output::default();
                            core.leave(&mut out);
                            self.apply(&core, out).await;
                        }
                    }
                    return;
                }
                () = sleep_until(next_timer) => {
                    let now = Instant::now();
                    // Every timer due now, in order.
                    while let Some(Reverse((at, seq))) = self.timers.peek().copied() {
                        if at > now {
                            break;
                        }
                        self.timers.pop();
                        if let Some(timer) = self.pending.remove(&seq) {
                            core.handle_timer(timer, &mut out);
                        }
                    }
                }
                received = self.socket.recv_from(&mut buf) => {
                    match received {
                        Ok((len, _from)) => core.handle_packet(&buf[..len], &mut out),
                        // ICMP errors from a dead peer surface here on some systems.
                        Err(error) => tracing::trace!(%error, "bus receive failed"),
                    }
                }
                _ = join.tick() => core.retry_join(&mut out),
                _ = refresh.tick() => core.refresh_info(&mut out),
            }
            self.apply(&core, out).await;
        }
    }

    async fn apply(&mut self, core: &Core, out: Output) {
        let now = Instant::now();
        for (after, timer) in out.timers {
            self.seq += 1;
            self.timers.push(Reverse((now + after, self.seq)));
            self.pending.insert(self.seq, timer);
        }
        for (to, bytes) in out.sends {
            if let Err(error) = self.socket.send_to(&bytes, to).await {
                tracing::trace!(%error, %to, "bus send failed");
            }
        }
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = core.stats();
        if out.changed {
            let mut view = core.view();
            let same = {
                let current = self.view_tx.borrow();
                current.nodes == view.nodes
                    && current.state == view.state
                    && current.table.version() == view.table.version()
                    && current.rejoins == view.rejoins
            };
            if !same {
                tracing::info!(
                    members = view.nodes.len(),
                    state = ?view.state,
                    version = format_args!("{:016x}", view.table.version()),
                    "cluster view changed"
                );
                view.seq = self.view_tx.borrow().seq + 1;
                self.view_tx.send_replace(Arc::new(view));
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
