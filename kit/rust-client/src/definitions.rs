//! `/v1/definitions`: store, read and retire named, versioned saga definitions.

use crate::client::{reason_body, Client};
use crate::error::Result;
use crate::types::{Definition, DefinitionList, DefinitionSummary};
use reqwest::Method;
use serde_json::Value;

impl Client {
    /// Stores `document` (a start without `id` and `payload`; `$payload` references allowed)
    /// as the next version of definition `name` (`PUT /v1/definitions/{name}`, admin scope).
    /// The bool is true for a new version (201), false when the document is identical to the
    /// latest version (200, no new version). A document a start would refuse is a 400 problem
    /// naming each mistake's pointer.
    pub async fn put_definition(&self, name: &str, document: &Value) -> Result<(Definition, bool)> {
        let url = self.url(&["v1", "definitions", name], &[])?;
        let a = self
            .call(Method::PUT, url, Some(document), &[200, 201])
            .await?;
        Ok((a.json()?, a.status == 201))
    }

    /// The newest version of definition `name`, with `versions` listing every version
    /// (`GET /v1/definitions/{name}`); 404 problem for an unknown name.
    pub async fn definition(&self, name: &str) -> Result<Definition> {
        let url = self.url(&["v1", "definitions", name], &[])?;
        self.send(Method::GET, url, None, &[200]).await?.json()
    }

    /// Version `version` of definition `name`; 404 problem when there is none.
    pub async fn definition_version(&self, name: &str, version: u32) -> Result<Definition> {
        let v = version.to_string();
        let url = self.url(&["v1", "definitions", name, "versions", &v], &[])?;
        self.send(Method::GET, url, None, &[200]).await?.json()
    }

    /// Every definition, by name (`GET /v1/definitions`).
    pub async fn definitions(&self) -> Result<Vec<DefinitionSummary>> {
        let url = self.url(&["v1", "definitions"], &[])?;
        let list: DefinitionList = self.send(Method::GET, url, None, &[200]).await?.json()?;
        Ok(list.items)
    }

    /// Retires a version: it takes no new start, running sagas of it go on (`POST
    /// /v1/definitions/{name}/versions/{n}/retire`, admin scope). Retiring it again changes
    /// nothing. A start naming it (or, when every version is retired, the definition) is then
    /// a 409 problem (`definition-retired`).
    pub async fn retire_definition(
        &self,
        name: &str,
        version: u32,
        reason: Option<&str>,
    ) -> Result<Definition> {
        let v = version.to_string();
        let url = self.url(&["v1", "definitions", name, "versions", &v, "retire"], &[])?;
        self.call(Method::POST, url, reason_body(reason).as_ref(), &[200])
            .await?
            .json()
    }
}
