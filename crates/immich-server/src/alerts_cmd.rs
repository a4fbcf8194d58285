//! `immich-server alerts check|test`.

use appliance::alerts::{self, channels};
use appliance::config::Config;
use appliance::exit::Exit;
use appliance::lifecycle::Progress;

use crate::cli::AlertsCmd;
use crate::{Fail, Term};

const NONE_SET: &str = "no alert channel is set: set services.immich-appliance.alerts.ntfy.url (a push to your phone), alerts.email or alerts.webhookUrl (docs/alerts.md)";

pub fn run(
    cfg: &Config,
    cmd: &AlertsCmd,
    status: impl FnOnce() -> Result<appliance::status::Status, Fail>,
    term: &Term,
) -> Result<(), Fail> {
    let (owned, waiting) = channels::configured(cfg);
    let chans: Vec<&dyn channels::Channel> = owned.iter().map(|c| c.as_ref()).collect();
    for w in &waiting {
        term.note(w);
    }
    if chans.is_empty() && waiting.is_empty() {
        return match cmd {
            AlertsCmd::Check => {
                term.note(NONE_SET);
                Ok(())
            }
            AlertsCmd::Test => Err(Fail(Exit::Config, anyhow::anyhow!(NONE_SET))),
        };
    }
    let failed = match cmd {
        AlertsCmd::Check => {
            let r = alerts::run_check(cfg, &status()?, &chans, std::time::SystemTime::now())
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
            r.failed.len()
        }
        AlertsCmd::Test => {
            let m = alerts::Context::new(cfg).test_message();
            let mut failed = 0;
            for ch in &chans {
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
    };
    if failed > 0 {
        return Err(Fail(
            Exit::Alert,
            anyhow::anyhow!(
                "{failed} message(s) could not be delivered; `alerts check` tries again on its next run"
            ),
        ));
    }
    Ok(())
}
