//! The break-glass commands: `force-release`, `disable`, `enable`, `ask-release`.
//! Each acts on its names in turn and says, for each, what changed (or that there
//! was nothing to do, which is no failure: every action may be repeated).

use super::commands::with_client;
use super::output::{show, when};
use super::{AdminArgs, ForceReleaseArgs, PrintArgs};
use crate::client::{AdminAction, AdminDone, SlotDone};

pub async fn force_release(args: ForceReleaseArgs) -> u8 {
    let ForceReleaseArgs { admin, slot } = args;
    let Some(fence) = slot else {
        return act(AdminAction::ForceRelease, admin).await;
    };
    let AdminArgs {
        names,
        reason,
        client: options,
        print: PrintArgs { json },
    } = admin;
    let [name] = names.as_slice() else {
        super::output::warn("--slot names the slot of one semaphore: give one NAME");
        return super::EXIT_FAILED;
    };
    with_client(&options, name, async |client| {
        let done = client
            .force_release_slot(name, fence, reason.as_deref())
            .await?;
        show(json, &done, || slot_sentence(&done, name.as_str()));
        Ok(0)
    })
    .await
}

/// Takes `action` on each of `args`' names in turn; the status of the first that
/// failed, or 0.
pub async fn act(action: AdminAction, args: AdminArgs) -> u8 {
    let AdminArgs {
        names,
        reason,
        client: options,
        print: PrintArgs { json },
    } = args;
    let mut status = 0;
    for name in &names {
        let code = with_client(&options, name, async |client| {
            let done = client.admin(name, action, reason.as_deref()).await?;
            show(json, &done, || sentence(action, &done));
            Ok(0)
        })
        .await;
        if status == 0 {
            status = code;
        }
    }
    status
}

/// What `done` did, as a sentence.
fn sentence(action: AdminAction, done: &AdminDone) -> String {
    let lock = &done.lock;
    let (name, fence) = (&lock.name, lock.fence);
    match (action, done.changed) {
        (AdminAction::ForceRelease, true) => format!(
            "force-released \"{name}\": the lease of fence {fence} is over, and the next acquire gets a fence above {fence}; the body is kept"
        ),
        (AdminAction::ForceRelease, false) => {
            format!("\"{name}\" was released already (fence {fence}); nothing changed")
        }
        (AdminAction::Disable, true) => {
            let holder = match (&lock.expire_time, lock.held) {
                (Some(end), true) => format!(
                    "; its holder (fence {fence}) keeps its lease until {} unless it is force-released",
                    when(end)
                ),
                _ => String::new(),
            };
            format!(
                "disabled \"{name}\": no acquire succeeds until `fencelock enable {name}`{holder}"
            )
        }
        (AdminAction::Disable, false) => match &lock.disabled {
            Some(disabled) => format!(
                "\"{name}\" was disabled already (by {} at {}); nothing changed",
                disabled.by,
                when(&disabled.time)
            ),
            None => format!("\"{name}\" was disabled already; nothing changed"),
        },
        (AdminAction::Enable, true) => format!("enabled \"{name}\": it may be acquired again"),
        (AdminAction::Enable, false) => format!("\"{name}\" was not disabled; nothing changed"),
        (AdminAction::AskRelease, true) => format!(
            "asked the holder of \"{name}\" (fence {fence}) to release it: it is told on its next heartbeat (one comes every third of its {} lease)",
            lock.ttl
        ),
        (AdminAction::AskRelease, false) => {
            format!("\"{name}\" is not held; there is nobody to ask")
        }
    }
}

fn slot_sentence(done: &SlotDone, name: &str) -> String {
    let fence = done.fence;
    if done.changed {
        format!(
            "force-released slot {fence} of semaphore \"{name}\": its holder loses it on its next heartbeat; {} of {} slots are free",
            done.semaphore.free, done.semaphore.limit
        )
    } else {
        format!("semaphore \"{name}\" has no held slot of fence {fence}; nothing changed")
    }
}
