//! `immich-server alerts check|test|email-password`.

use crate::alerts::{self, channels};
use crate::config::Config;
use crate::exit::Exit;
use crate::lifecycle::Progress;
use crate::secret::Source;
use crate::status::Status;

use super::args::AlertsCmd;
use super::{Fail, Term, msg};

const NONE_SET: &str = "no alert channel is set: set services.immich-appliance.alerts.ntfy.url (a push to your phone), alerts.email or alerts.webhookUrl (docs/alerts.md)";

pub fn run(
    cfg: &Config,
    cmd: &AlertsCmd,
    secret: &Source,
    status: impl FnOnce() -> Result<Status, Fail>,
    term: &Term,
) -> Result<(), Fail> {
    if let AlertsCmd::EmailPassword = cmd {
        let pw = crate::secret::read(secret, "SMTP password for e-mail alerts: ")
            .map_err(|e| Fail(Exit::Usage, e.into()))?;
        let path = alerts::store_email_password(cfg, &pw)
            .map_err(|e| Fail(Exit::Drive, msg(e.to_string())))?;
        println!(
            "Stored in {}. Try it: sudo immich-server alerts test",
            path.display()
        );
        return Ok(());
    }
    let (owned, waiting) = channels::configured(cfg);
    let chans: Vec<&dyn channels::Channel> = owned.iter().map(|c| c.as_ref()).collect();
    for w in &waiting {
        term.note(w);
    }
    let nothing_set = chans.is_empty() && waiting.is_empty();
    let failed = if let AlertsCmd::Check = cmd {
        if nothing_set {
            term.note(NONE_SET);
            return Ok(());
        }
        check(cfg, &status()?, &chans)?
    } else {
        if nothing_set {
            return Err(Fail(Exit::Config, msg(NONE_SET.into())));
        }
        test(cfg, &chans)
    };
    if failed > 0 {
        return Err(Fail(
            Exit::Alert,
            msg(format!(
                "{failed} message(s) could not be delivered; `alerts check` tries again on its next run"
            )),
        ));
    }
    Ok(())
}

/// One check; the number of messages that did not go through.
fn check(cfg: &Config, status: &Status, chans: &[&dyn channels::Channel]) -> Result<usize, Fail> {
    let r = alerts::run_check(cfg, status, chans, std::time::SystemTime::now())
        .map_err(|e| Fail(Exit::Failure, e.into()))?;
    for (ch, c, kind) in &r.sent {
        println!("{ch}: told {c} ({kind:?})");
    }
    for (ch, c) in &r.held_back {
        println!("{ch}: {c} came back within the hour; held back");
    }
    for (ch, c, e) in &r.failed {
        println!("{ch}: {c} not delivered: {e}");
    }
    if r.sent.is_empty() && r.failed.is_empty() {
        println!("Nothing new to tell.");
    }
    Ok(r.failed.len())
}

fn test(cfg: &Config, chans: &[&dyn channels::Channel]) -> usize {
    let m = alerts::Context::new(cfg).test_message();
    let mut failed = 0;
    for ch in chans {
        match ch.send(&m) {
            Ok(()) => println!("{}: sent", ch.name()),
            Err(e) => {
                failed += 1;
                println!("{}: not delivered: {e}", ch.name());
            }
        }
    }
    failed
}
