//! The application `shardcast serve` runs: the built-in channels on their routes, with token
//! auth at connect, composed from the configuration file.

use crate::config::Config;
use crate::core::echo::EchoChannel;
use crate::core::{App, Router};
use crate::features::auth::{self, Authenticator};
#[cfg(feature = "rooms")]
use crate::features::{CollaborationChannel, RoomChannel, Services};
use crate::features::{FeatureError, GameChannel, GameSettings, Guarded, TokenAuth, VoiceChannel};
#[cfg(feature = "uploads")]
use crate::features::{UploadChannel, UploadServices};
#[cfg(feature = "rooms")]
use crate::storage::Storage;
use std::sync::Arc;

/// The application `shardcast serve` runs: token auth at connect, and the routes `echo:*`,
/// `room:*` and `collaboration:*`. Resolves the signing secret as `shardcast token` does
/// (generating it on first use) and warns when it is not configured explicitly.
#[cfg(feature = "rooms")]
pub fn default_app(config: &Config, storage: Storage) -> Result<App, FeatureError> {
    let (authenticator, source) = Authenticator::from_config(&config.auth, &config.data_dir)?;
    match &source {
        auth::SecretSource::Configured => {}
        auth::SecretSource::Generated(path) => tracing::warn!(
            path = %path.display(),
            "no [auth] secret configured: generated one and stored it in the data directory; \
             set [auth] secret (or SHARDCAST_AUTH__SECRET) in production"
        ),
        auth::SecretSource::Stored(path) => tracing::warn!(
            path = %path.display(),
            "no [auth] secret configured: using the one stored in the data directory"
        ),
    }
    if config.auth.allow_anonymous {
        tracing::warn!("[auth] allow_anonymous is on: sockets without a token join as guests");
    }
    let auth = Arc::new(authenticator);
    let services = Arc::new(Services {
        auth: auth.clone(),
        storage,
        rooms: config.rooms.clone(),
    });
    let router = Router::new()
        .channel("echo:*", {
            let auth = auth.clone();
            move || Guarded::new(auth.clone(), EchoChannel)
        })
        .channel("room:*", {
            let services = services.clone();
            move || RoomChannel::new(services.clone())
        })
        .channel("collaboration:*", {
            let services = services.clone();
            move || CollaborationChannel::new(services.clone())
        });
    // `document:*`: its own database and thread, stopped when the routes are dropped.
    #[cfg(feature = "documents")]
    let router = {
        let documents = crate::features::document::DocumentServices::open(
            &config.documents,
            &config.data_dir,
            config.rooms.max_members,
            auth.clone(),
        )?;
        router.channel("document:*", move || documents.channel())
    };
    // The binary fast path: `game:*`, `voice:*`, `uploads:*`.
    let game = Arc::new(GameSettings::from_config(
        &config.game,
        &config.audio,
        &config.bulk,
    ));
    #[cfg(feature = "uploads")]
    let router = {
        let uploads = UploadServices::open(
            &config.uploads,
            &config.data_dir,
            config.websocket.max_message_size,
        )?;
        let auth = auth.clone();
        router.channel("uploads:*", move || {
            UploadChannel::new(uploads.clone(), Some(auth.clone()))
        })
    };
    let router = router
        .channel("game:*", {
            let (auth, game) = (auth.clone(), game.clone());
            move || Guarded::new(auth.clone(), GameChannel::new(game.clone()))
        })
        .channel("voice:*", {
            let auth = auth.clone();
            move || Guarded::new(auth.clone(), VoiceChannel::new(game.audio))
        });
    Ok(App::new(TokenAuth::new(auth), router))
}

#[cfg(all(test, feature = "rooms", feature = "documents", feature = "uploads"))]
mod tests;
