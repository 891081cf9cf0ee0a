//! `facepay faces`: the gallery at rest, audited. `verify-erasure PAYER` says whether a
//! deleted payer's face is gone for good (see `FaceStore::verify_erasure`); it exits with
//! an error when it is not.

use clap::Subcommand;
use facepay_domain::PayerId;

use crate::app::open_store;
use crate::config::Config;

#[derive(Subcommand)]
pub enum FacesWhat {
    /// Check that PAYER's face is erased: no live face, no key in the face key file, no
    /// logged template that opens, no byte of their key records in the key file's files.
    VerifyErasure {
        payer: String,
        #[arg(long)]
        json: bool,
    },
}

/// `facepay faces …` over the configured store, key file and master key.
pub async fn run(what: FacesWhat, config: &Config) -> anyhow::Result<()> {
    let FacesWhat::VerifyErasure { payer, json } = what;
    let payer = PayerId::parse(payer)?;
    let store = open_store(&config.database_url).await?.ledger;
    let Some(faces) = config.pipeline(&store).await?.faces else {
        anyhow::bail!("FACEPAY_FACE_MASTER_KEY is not set: no face is kept at rest, so there is nothing to audit");
    };
    let report = faces.verify_erasure(&payer).await?;
    match json {
        true => println!("{}", serde_json::to_string_pretty(&report)?),
        false => {
            println!("payer {}: {}", report.payer_id, if report.erased { "erased" } else { "NOT erased" });
            println!("  live face in the ledger: {}", report.live_face);
            println!("  keys in the face key file: {}", report.keys_kept);
            println!("  sealed templates logged: {} (opening: {})", report.templates_logged, report.templates_opening);
            for t in &report.traces {
                println!("  trace: {} at byte {} of {}", t.what, t.offset, t.file);
            }
        }
    }
    anyhow::ensure!(report.erased, "payer {}'s face is not erased", report.payer_id);
    Ok(())
}
