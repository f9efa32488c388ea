//! The named volumes and networks berth creates for its services: made on
//! first use with berth's labels (managed, instance, service, as on its
//! containers), reused as they are afterwards, and removed only when asked
//! (`berthctl rm --volumes`, or a network nothing uses any more).

use std::collections::HashMap;

use berth_core::labels;
use bollard::models::{NetworkCreateRequest, VolumeCreateOptions};
use bollard::query_parameters::{InspectNetworkOptions, ListVolumesOptions, RemoveVolumeOptions};

use super::engine::Engine;
use super::error::{DockerError, server_error, status_of};

/// Whether [`Engine::ensure_volume`] or [`Engine::ensure_network`] made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// It existed already (berth's or not) and is used as it is.
    Existed,
    /// Berth created it just now.
    Created,
}

impl Engine {
    /// The labels of a volume or network berth creates for `service`.
    fn resource_labels(&self, service: &str) -> HashMap<String, String> {
        HashMap::from([
            (labels::MANAGED.to_owned(), "true".to_owned()),
            (labels::INSTANCE.to_owned(), self.instance().to_owned()),
            (labels::SERVICE.to_owned(), service.to_owned()),
        ])
    }

    /// Makes sure the named volume `name` exists, creating it with berth's
    /// labels for `service` if it does not. An existing volume, whoever
    /// made it, is used as `docker run -v` would.
    pub async fn ensure_volume(&self, name: &str, service: &str) -> Result<Ensured, DockerError> {
        match self.docker().inspect_volume(name).await {
            Ok(_) => return Ok(Ensured::Existed),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(self.fail(format!("inspect volume {name}"), e)),
        }
        let options = VolumeCreateOptions {
            name: Some(name.to_owned()),
            labels: Some(self.resource_labels(service)),
            ..Default::default()
        };
        self.docker()
            .create_volume(options)
            .await
            .map_err(|e| self.fail(format!("create volume {name}"), e))?;
        Ok(Ensured::Created)
    }

    /// The names of the volumes this instance created for `service`.
    pub async fn service_volumes(&self, service: &str) -> Result<Vec<String>, DockerError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{}=true", labels::MANAGED),
                format!("{}={}", labels::INSTANCE, self.instance()),
                format!("{}={service}", labels::SERVICE),
            ],
        )]);
        let options = ListVolumesOptions { filters: Some(filters) };
        let list = self
            .docker()
            .list_volumes(Some(options))
            .await
            .map_err(|e| self.fail(format!("list the volumes of {service}"), e))?;
        let mut names: Vec<String> = list.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect();
        names.sort();
        Ok(names)
    }

    /// Removes a volume; a missing one = Ok. Docker refuses one a
    /// container still uses.
    pub async fn remove_volume(&self, name: &str) -> Result<(), DockerError> {
        match self
            .docker()
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.fail(format!("remove volume {name}"), e)),
        }
    }

    /// Makes sure the network `name` exists, creating a bridge network with
    /// berth's labels for `service` if it does not.
    pub async fn ensure_network(&self, name: &str, service: &str) -> Result<Ensured, DockerError> {
        match self.docker().inspect_network(name, None::<InspectNetworkOptions>).await {
            Ok(_) => return Ok(Ensured::Existed),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(self.fail(format!("inspect network {name}"), e)),
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            labels: Some(self.resource_labels(service)),
            ..Default::default()
        };
        match self.docker().create_network(request).await {
            Ok(_) => Ok(Ensured::Created),
            // Created by someone else in between: use it.
            Err(e) if server_error(&e).is_some_and(|(status, _)| status == 409) => Ok(Ensured::Existed),
            Err(e) => Err(self.fail(format!("create network {name}"), e)),
        }
    }

    /// Removes the network `name` if this instance created it and no
    /// container is attached any more. Returns whether it was removed.
    pub async fn remove_unused_network(&self, name: &str) -> Result<bool, DockerError> {
        let network = match self.docker().inspect_network(name, None::<InspectNetworkOptions>).await {
            Ok(network) => network,
            Err(e) if status_of(&e) == Some(404) => return Ok(false),
            Err(e) => return Err(self.fail(format!("inspect network {name}"), e)),
        };
        let labels = network.labels.unwrap_or_default();
        let ours = labels.get(labels::MANAGED).map(String::as_str) == Some("true")
            && labels.get(labels::INSTANCE).map(String::as_str) == Some(self.instance());
        if !ours || network.containers.is_some_and(|c| !c.is_empty()) {
            return Ok(false);
        }
        match self.docker().remove_network(name).await {
            Ok(()) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            // Something attached in between: it stays.
            Err(e) if server_error(&e).is_some_and(|(status, _)| status == 403 || status == 409) => Ok(false),
            Err(e) => Err(self.fail(format!("remove network {name}"), e)),
        }
    }
}
