//! The workspace API: workspaces, members, roles, API keys and the decision endpoint for backend
//! services. Handlers extract, call one domain function (which asks the decision function) and
//! map the result; none decides access itself.

use super::accounts::{Created, Done};
use super::auth::{origin, WorkspaceAuth};
use super::edge::RequestInfo;
use super::error::{fail, ts, ApiError};
use super::ApiTags;
use crate::db::{ApiKeyRow, WorkspaceRow};
use crate::domain::authz::{Condition, Decision, Effect, Rule, RuleInput};
use crate::domain::workspaces::{self as ws, Check, KeyChange, Member, RoleView};
use crate::error::AppError;
use crate::http::json::JsonBody;
use crate::state::AppState;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Union};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use time::OffsetDateTime;

/// A workspace.
#[derive(Debug, Object)]
pub struct WorkspaceView {
    pub id: String,
    /// Unique, 3 to 64 characters of `a-z 0-9 -`; usable wherever the id is.
    pub slug: String,
    pub name: String,
    pub created_by: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl From<WorkspaceRow> for WorkspaceView {
    fn from(w: WorkspaceRow) -> Self {
        Self {
            id: w.id,
            slug: w.slug,
            name: w.name,
            created_by: w.created_by,
            created_at: ts(w.created_at_ms),
            updated_at: ts(w.updated_at_ms),
        }
    }
}

/// `POST /v1/workspaces`.
#[derive(Debug, Object)]
pub struct NewWorkspace {
    /// 3 to 64 characters of `a-z 0-9 -`, not starting or ending with `-`; unique.
    #[oai(validator(max_length = 64))]
    pub slug: String,
    /// Display name, 1 to 200 characters.
    #[oai(validator(max_length = 200))]
    pub name: String,
}

/// `PATCH /v1/workspaces/{ws}`.
#[derive(Debug, Object)]
pub struct WorkspaceChange {
    #[oai(validator(max_length = 64))]
    pub slug: Option<String>,
    #[oai(validator(max_length = 200))]
    pub name: Option<String>,
}

#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct WorkspacePage {
    pub items: Vec<WorkspaceView>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// A workspace member.
#[derive(Debug, Object)]
pub struct MemberView {
    pub user_id: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub disabled: bool,
    /// Role names.
    pub roles: Vec<String>,
    pub added_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.row.user_id,
            email: m.row.email,
            name: m.row.name,
            disabled: m.row.disabled,
            roles: m.roles,
            added_at: ts(m.row.created_at_ms),
            updated_at: ts(m.row.updated_at_ms),
        }
    }
}

/// `PUT /v1/workspaces/{ws}/members/{user}`.
#[derive(Debug, Object)]
pub struct MemberRoles {
    /// Role names (or ids) of this workspace: `owner`, `editor`, `viewer` or custom roles.
    #[oai(validator(min_items = 1, max_items = 64))]
    pub roles: Vec<String>,
}

#[derive(Debug, ApiResponse)]
pub enum MemberSet {
    /// The member's roles were replaced.
    #[oai(status = 200)]
    Updated(Json<MemberView>),
    /// The user is now a member.
    #[oai(status = 201)]
    Added(Json<MemberView>),
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum RuleEffect {
    Allow,
    Deny,
}

/// A rule: `effect` on `actions` of `subjects`, when every condition holds. Deny wins over
/// allow; nothing matching means no. `*` matches every action or subject; the subject
/// `@backend` matches every subject that is not Gatehouse's own (`workspace`, `member`, `role`,
/// `api_key`, `secret`, `audit`, whose actions are fixed). A condition compares one resource
/// attribute: a bare value (equals), `{"equals": v}`, `{"in": [v, …]}` or `{"prefix": "s"}`;
/// string values may use `${user.id}` and `${user.email}`.
#[derive(Debug, Clone, Object)]
pub struct RuleDto {
    pub effect: RuleEffect,
    #[oai(validator(min_items = 1, max_items = 50))]
    pub actions: Vec<String>,
    #[oai(validator(min_items = 1, max_items = 50))]
    pub subjects: Vec<String>,
    /// Attribute name → condition; all must hold.
    pub conditions: Option<HashMap<String, Value>>,
}

impl From<RuleDto> for RuleInput {
    fn from(r: RuleDto) -> Self {
        RuleInput {
            effect: match r.effect {
                RuleEffect::Allow => Effect::Allow,
                RuleEffect::Deny => Effect::Deny,
            },
            actions: r.actions,
            subjects: r.subjects,
            conditions: r.conditions.unwrap_or_default().into_iter().collect::<BTreeMap<_, _>>(),
        }
    }
}

impl From<Rule> for RuleDto {
    fn from(r: Rule) -> Self {
        let conditions: HashMap<String, Value> = r
            .conditions
            .into_iter()
            .map(|(k, c)| {
                let v = match c {
                    Condition::Equals(v) => serde_json::json!({ "equals": v }),
                    Condition::In(v) => serde_json::json!({ "in": v }),
                    Condition::Prefix(p) => serde_json::json!({ "prefix": p }),
                };
                (k, v)
            })
            .collect();
        RuleDto {
            effect: match r.effect {
                Effect::Allow => RuleEffect::Allow,
                Effect::Deny => RuleEffect::Deny,
            },
            actions: r.actions,
            subjects: r.subjects,
            conditions: Some(conditions),
        }
    }
}

fn rules_in(rules: Vec<RuleDto>) -> Vec<RuleInput> {
    rules.into_iter().map(RuleInput::from).collect()
}

fn rules_out(rules: Vec<Rule>) -> Vec<RuleDto> {
    rules.into_iter().map(RuleDto::from).collect()
}

/// A role. Built-in roles (`owner`, `editor`, `viewer`) show the rules that define them and
/// cannot be changed or deleted.
#[derive(Debug, Object)]
pub struct RoleDto {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub builtin: bool,
    pub rules: Vec<RuleDto>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl From<RoleView> for RoleDto {
    fn from(r: RoleView) -> Self {
        Self {
            id: r.row.id,
            name: r.row.name,
            description: r.row.description,
            builtin: r.row.builtin,
            rules: rules_out(r.rules),
            created_at: ts(r.row.created_at_ms),
            updated_at: ts(r.row.updated_at_ms),
        }
    }
}

/// `POST /v1/workspaces/{ws}/roles` and `PUT /v1/workspaces/{ws}/roles/{role}`.
#[derive(Debug, Object)]
pub struct RoleInputDto {
    /// 1 to 64 characters of `a-z 0-9 - _`, starting with a letter; not a built-in name.
    #[oai(validator(max_length = 64))]
    pub name: String,
    #[oai(validator(max_length = 500))]
    pub description: Option<String>,
    /// At most 100 rules; none may allow what the caller may not do.
    #[oai(validator(max_items = 100))]
    pub rules: Vec<RuleDto>,
}

/// One question for the decision endpoint.
#[derive(Debug, Object)]
pub struct CheckDto {
    /// A user id; absent means the caller itself. Asking about another user needs `authorize`
    /// on `workspace`.
    #[oai(validator(max_length = 64))]
    pub principal: Option<String>,
    #[oai(validator(max_length = 64))]
    pub action: String,
    #[oai(validator(max_length = 64))]
    pub subject: String,
    /// The resource's attributes (`id`, `owner`, `path`…): strings, numbers or booleans.
    pub resource: Option<HashMap<String, Value>>,
}

/// `POST /v1/workspaces/{ws}/authorize`: one question (`action`, `subject`, optional
/// `principal` and `resource`), or a batch of up to 1000 in `checks`.
#[derive(Debug, Object)]
pub struct AuthorizeRequest {
    #[oai(validator(max_length = 64))]
    pub principal: Option<String>,
    #[oai(validator(max_length = 64))]
    pub action: Option<String>,
    #[oai(validator(max_length = 64))]
    pub subject: Option<String>,
    pub resource: Option<HashMap<String, Value>>,
    /// The batch form; the answers come in `results`, in order.
    #[oai(validator(max_items = 1000))]
    pub checks: Option<Vec<CheckDto>>,
}

/// One answer: allowed or not, why, and the rule that decided (`<role>[<index>]`,
/// `api_key[<index>]`; null when no rule matched or a platform admin was allowed).
#[derive(Debug, Object)]
pub struct DecisionDto {
    pub allowed: bool,
    pub reason: String,
    pub rule: Option<String>,
}

impl From<Decision> for DecisionDto {
    fn from(d: Decision) -> Self {
        Self { allowed: d.allowed, reason: d.reason, rule: d.rule }
    }
}

/// The answers to a batch, in the order asked.
#[derive(Debug, Object)]
pub struct BatchDecisions {
    pub results: Vec<DecisionDto>,
}

#[derive(Debug, Union)]
#[oai(one_of)]
pub enum AuthorizeAnswer {
    Single(DecisionDto),
    Batch(BatchDecisions),
}

/// A workspace API key (never its secret, except once in the answer that creates or rotates
/// it).
#[derive(Debug, Object)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The secret's last characters, to tell keys apart.
    pub hint: String,
    pub rules: Vec<RuleDto>,
    pub enabled: bool,
    pub expires_at: Option<OffsetDateTime>,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub rotated_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
    pub last_used_ip: Option<String>,
}

fn key_view(k: ApiKeyRow, rules: Vec<Rule>) -> ApiKeyView {
    ApiKeyView {
        id: k.id,
        name: k.name,
        hint: k.hint,
        rules: rules_out(rules),
        enabled: k.enabled,
        expires_at: k.expires_at_ms.map(ts),
        created_by: k.created_by,
        created_at: ts(k.created_at_ms),
        updated_at: ts(k.updated_at_ms),
        rotated_at: k.rotated_at_ms.map(ts),
        last_used_at: k.last_used_at_ms.map(ts),
        last_used_ip: k.last_used_ip,
    }
}

/// `POST /v1/workspaces/{ws}/api-keys`.
#[derive(Debug, Object)]
pub struct NewApiKey {
    #[oai(validator(max_length = 100))]
    pub name: String,
    /// What the key may do, within what its creator may do (now and at each use).
    #[oai(validator(max_items = 100))]
    pub rules: Vec<RuleDto>,
    /// Optional; the key stops working at this instant.
    pub expires_at: Option<OffsetDateTime>,
}

/// `PATCH /v1/workspaces/{ws}/api-keys/{id}`.
#[derive(Debug, Object)]
pub struct ApiKeyChange {
    #[oai(validator(max_length = 100))]
    pub name: Option<String>,
    #[oai(validator(max_items = 100))]
    pub rules: Option<Vec<RuleDto>>,
    pub enabled: Option<bool>,
    pub expires_at: Option<OffsetDateTime>,
    /// `true` removes the expiry.
    pub never_expires: Option<bool>,
}

/// A key's secret, shown once: store it now.
#[derive(Debug, Object)]
pub struct CreatedApiKey {
    /// `gthk_<random><checksum>`; send it in `X-Api-Key`.
    pub key: String,
    #[oai(flatten)]
    pub record: ApiKeyView,
}

#[derive(Default)]
pub struct WorkspacesApi;

#[OpenApi]
impl WorkspacesApi {
    /// List workspaces
    ///
    /// Those the caller belongs to; every workspace for a platform admin; its own for an API key.
    #[oai(path = "/v1/workspaces", method = "get", tag = "ApiTags::Workspaces", operation_id = "listWorkspaces")]
    async fn list(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        cursor: Query<Option<String>>,
        /// 1 to 200, default 50.
        limit: Query<Option<u32>>,
    ) -> Result<Json<WorkspacePage>, ApiError> {
        let (rows, next) =
            ws::list(&state, auth.principal(), cursor.0, limit.0.unwrap_or(50)).await.map_err(fail(&info))?;
        Ok(Json(WorkspacePage { items: rows.into_iter().map(WorkspaceView::from).collect(), next_cursor: next }))
    }

    /// Create a workspace
    ///
    /// The caller becomes its owner. Anonymous users and API keys cannot create workspaces.
    #[oai(path = "/v1/workspaces", method = "post", tag = "ApiTags::Workspaces", operation_id = "createWorkspace")]
    async fn create(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        body: JsonBody<NewWorkspace>,
    ) -> Result<Created<WorkspaceView>, ApiError> {
        let b = body.0;
        let w = ws::create(&state, auth.principal(), b.slug, b.name, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Created::Created(Json(w.into())))
    }

    /// Get a workspace
    ///
    /// `{ws}` is the id or the slug. Needs `read` on `workspace`.
    #[oai(path = "/v1/workspaces/:ws", method = "get", tag = "ApiTags::Workspaces", operation_id = "getWorkspace")]
    async fn get(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
    ) -> Result<Json<WorkspaceView>, ApiError> {
        let w = ws::get(&state, auth.principal(), &ws.0).await.map_err(fail(&info))?;
        Ok(Json(w.into()))
    }

    /// Change a workspace's slug or name
    ///
    /// Needs `update` on `workspace`.
    #[oai(path = "/v1/workspaces/:ws", method = "patch", tag = "ApiTags::Workspaces", operation_id = "updateWorkspace")]
    async fn update(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        body: JsonBody<WorkspaceChange>,
    ) -> Result<Json<WorkspaceView>, ApiError> {
        let b = body.0;
        let w =
            ws::update(&state, auth.principal(), &ws.0, b.slug, b.name, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Json(w.into()))
    }

    /// Delete a workspace
    ///
    /// Its members, roles and API keys go with it. Needs `delete` on `workspace`.
    #[oai(
        path = "/v1/workspaces/:ws",
        method = "delete",
        tag = "ApiTags::Workspaces",
        operation_id = "deleteWorkspace"
    )]
    async fn delete(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
    ) -> Result<Done, ApiError> {
        ws::delete(&state, auth.principal(), &ws.0, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Done::NoContent(None))
    }

    /// List members
    ///
    /// Needs `read` on `member`.
    #[oai(
        path = "/v1/workspaces/:ws/members",
        method = "get",
        tag = "ApiTags::Workspaces",
        operation_id = "listMembers"
    )]
    async fn members(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
    ) -> Result<Json<Vec<MemberView>>, ApiError> {
        let rows = ws::members(&state, auth.principal(), &ws.0).await.map_err(fail(&info))?;
        Ok(Json(rows.into_iter().map(MemberView::from).collect()))
    }

    /// Add a member or set its roles
    ///
    /// `{user}` is a user id or an email. Needs `create` (new member) or `update` on `member`;
    /// the roles given may not carry rights the caller lacks, nor may the member's current ones.
    /// The last owner cannot be demoted.
    #[oai(
        path = "/v1/workspaces/:ws/members/:user",
        method = "put",
        tag = "ApiTags::Workspaces",
        operation_id = "setMember"
    )]
    async fn set_member(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        user: Path<String>,
        body: JsonBody<MemberRoles>,
    ) -> Result<MemberSet, ApiError> {
        let (m, created) = ws::set_member(&state, auth.principal(), &ws.0, &user.0, body.0.roles, &origin(&info))
            .await
            .map_err(fail(&info))?;
        Ok(if created { MemberSet::Added(Json(m.into())) } else { MemberSet::Updated(Json(m.into())) })
    }

    /// Remove a member
    ///
    /// Needs `delete` on `member` (a member may always leave). The last owner cannot be removed.
    #[oai(
        path = "/v1/workspaces/:ws/members/:user",
        method = "delete",
        tag = "ApiTags::Workspaces",
        operation_id = "removeMember"
    )]
    async fn remove_member(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        user: Path<String>,
    ) -> Result<Done, ApiError> {
        ws::remove_member(&state, auth.principal(), &ws.0, &user.0, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Done::NoContent(None))
    }

    /// List roles
    ///
    /// The built-in roles and the workspace's custom roles. Needs `read` on `role`.
    #[oai(path = "/v1/workspaces/:ws/roles", method = "get", tag = "ApiTags::Workspaces", operation_id = "listRoles")]
    async fn roles(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
    ) -> Result<Json<Vec<RoleDto>>, ApiError> {
        let rows = ws::roles(&state, auth.principal(), &ws.0).await.map_err(fail(&info))?;
        Ok(Json(rows.into_iter().map(RoleDto::from).collect()))
    }

    /// Create a custom role
    ///
    /// Needs `create` on `role`; its rules may not allow what the caller may not do.
    #[oai(path = "/v1/workspaces/:ws/roles", method = "post", tag = "ApiTags::Workspaces", operation_id = "createRole")]
    async fn create_role(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        body: JsonBody<RoleInputDto>,
    ) -> Result<Created<RoleDto>, ApiError> {
        let b = body.0;
        let r =
            ws::create_role(&state, auth.principal(), &ws.0, b.name, b.description, rules_in(b.rules), &origin(&info))
                .await
                .map_err(fail(&info))?;
        Ok(Created::Created(Json(r.into())))
    }

    /// Get a role
    ///
    /// `{role}` is the role's id or name. Needs `read` on `role`.
    #[oai(
        path = "/v1/workspaces/:ws/roles/:role",
        method = "get",
        tag = "ApiTags::Workspaces",
        operation_id = "getRole"
    )]
    async fn role(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        role: Path<String>,
    ) -> Result<Json<RoleDto>, ApiError> {
        let r = ws::role(&state, auth.principal(), &ws.0, &role.0).await.map_err(fail(&info))?;
        Ok(Json(r.into()))
    }

    /// Replace a custom role
    ///
    /// Name, description and rules. Needs `update` on `role`; the old and the new rules must both
    /// stay within the caller's rights. Built-in roles cannot be changed.
    #[oai(
        path = "/v1/workspaces/:ws/roles/:role",
        method = "put",
        tag = "ApiTags::Workspaces",
        operation_id = "updateRole"
    )]
    async fn update_role(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        role: Path<String>,
        body: JsonBody<RoleInputDto>,
    ) -> Result<Json<RoleDto>, ApiError> {
        let b = body.0;
        let r = ws::update_role(
            &state,
            auth.principal(),
            &ws.0,
            &role.0,
            b.name,
            b.description,
            rules_in(b.rules),
            &origin(&info),
        )
        .await
        .map_err(fail(&info))?;
        Ok(Json(r.into()))
    }

    /// Delete a custom role
    ///
    /// Needs `delete` on `role`. Refused while a member holds it.
    #[oai(
        path = "/v1/workspaces/:ws/roles/:role",
        method = "delete",
        tag = "ApiTags::Workspaces",
        operation_id = "deleteRole"
    )]
    async fn delete_role(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        role: Path<String>,
    ) -> Result<Done, ApiError> {
        ws::delete_role(&state, auth.principal(), &ws.0, &role.0, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Done::NoContent(None))
    }

    /// Ask for decisions
    ///
    /// For backend services: may this principal (a user id, or the caller) do this action on this
    /// resource? Answers `{allowed, reason, rule}`, or `{results: [...]}` for `checks`. Asking
    /// about another user needs `authorize` on `workspace`.
    #[oai(
        path = "/v1/workspaces/:ws/authorize",
        method = "post",
        tag = "ApiTags::Workspaces",
        operation_id = "authorize"
    )]
    async fn authorize(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        body: JsonBody<AuthorizeRequest>,
    ) -> Result<Json<AuthorizeAnswer>, ApiError> {
        let b = body.0;
        let to_check = |c: CheckDto| Check {
            principal: c.principal,
            action: c.action,
            subject: c.subject,
            resource: c.resource.unwrap_or_default().into_iter().collect(),
        };
        let (checks, batch) = match (b.checks, b.action, b.subject) {
            (Some(list), None, None) if b.principal.is_none() && b.resource.is_none() => {
                (list.into_iter().map(to_check).collect::<Vec<_>>(), true)
            }
            (None, Some(action), Some(subject)) => {
                (vec![to_check(CheckDto { principal: b.principal, action, subject, resource: b.resource })], false)
            }
            _ => {
                return Err(fail(&info)(AppError::Invalid(
                    "give either `checks` (a batch), or `action` and `subject` (with optional `principal` and \
                     `resource`)"
                        .into(),
                )))
            }
        };
        let mut out = ws::authorize(&state, auth.principal(), &ws.0, checks, batch).await.map_err(fail(&info))?;
        if batch {
            Ok(Json(AuthorizeAnswer::Batch(BatchDecisions {
                results: out.into_iter().map(DecisionDto::from).collect(),
            })))
        } else {
            let d = out.pop().ok_or_else(|| fail(&info)(AppError::internal("no decision")))?;
            Ok(Json(AuthorizeAnswer::Single(d.into())))
        }
    }

    /// List API keys
    ///
    /// Needs `read` on `api_key`.
    #[oai(
        path = "/v1/workspaces/:ws/api-keys",
        method = "get",
        tag = "ApiTags::Workspaces",
        operation_id = "listApiKeys"
    )]
    async fn api_keys(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
    ) -> Result<Json<Vec<ApiKeyView>>, ApiError> {
        let rows = ws::api_keys(&state, auth.principal(), &ws.0).await.map_err(fail(&info))?;
        Ok(Json(rows.into_iter().map(|(k, r)| key_view(k, r)).collect()))
    }

    /// Create an API key
    ///
    /// Needs `create` on `api_key`, and a signed-in user (API keys cannot create keys). The key's
    /// rules may not exceed the caller's rights (403 with the reason); at each use they are also
    /// cut to what the creator may still do, and the key stops working when its creator leaves
    /// the workspace or is disabled. The secret is in the answer, once.
    #[oai(
        path = "/v1/workspaces/:ws/api-keys",
        method = "post",
        tag = "ApiTags::Workspaces",
        operation_id = "createApiKey"
    )]
    async fn create_api_key(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        body: JsonBody<NewApiKey>,
    ) -> Result<Created<CreatedApiKey>, ApiError> {
        let b = body.0;
        let expires = b.expires_at.map(crate::domain::unix_ms);
        let k = ws::create_api_key(&state, auth.principal(), &ws.0, b.name, rules_in(b.rules), expires, &origin(&info))
            .await
            .map_err(fail(&info))?;
        Ok(Created::Created(Json(CreatedApiKey { key: k.key.expose().to_string(), record: key_view(k.row, k.rules) })))
    }

    /// Get an API key
    ///
    /// Needs `read` on `api_key`.
    #[oai(
        path = "/v1/workspaces/:ws/api-keys/:id",
        method = "get",
        tag = "ApiTags::Workspaces",
        operation_id = "getApiKey"
    )]
    async fn api_key(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        id: Path<String>,
    ) -> Result<Json<ApiKeyView>, ApiError> {
        let (k, r) = ws::api_key(&state, auth.principal(), &ws.0, &id.0).await.map_err(fail(&info))?;
        Ok(Json(key_view(k, r)))
    }

    /// Change an API key
    ///
    /// Name, rules (within the caller's rights), enabled, expiry. Needs `update` on `api_key`.
    #[oai(
        path = "/v1/workspaces/:ws/api-keys/:id",
        method = "patch",
        tag = "ApiTags::Workspaces",
        operation_id = "updateApiKey"
    )]
    async fn update_api_key(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        id: Path<String>,
        body: JsonBody<ApiKeyChange>,
    ) -> Result<Json<ApiKeyView>, ApiError> {
        let b = body.0;
        let expires_at_ms = match (b.expires_at, b.never_expires) {
            (Some(_), Some(true)) => {
                return Err(fail(&info)(AppError::Invalid("give expires_at or never_expires, not both".into())))
            }
            (Some(t), _) => Some(Some(crate::domain::unix_ms(t))),
            (None, Some(true)) => Some(None),
            (None, _) => None,
        };
        let change = KeyChange { name: b.name, rules: b.rules.map(rules_in), enabled: b.enabled, expires_at_ms };
        let (k, r) = ws::update_api_key(&state, auth.principal(), &ws.0, &id.0, change, &origin(&info))
            .await
            .map_err(fail(&info))?;
        Ok(Json(key_view(k, r)))
    }

    /// Delete an API key
    ///
    /// Needs `delete` on `api_key`.
    #[oai(
        path = "/v1/workspaces/:ws/api-keys/:id",
        method = "delete",
        tag = "ApiTags::Workspaces",
        operation_id = "deleteApiKey"
    )]
    async fn delete_api_key(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        id: Path<String>,
    ) -> Result<Done, ApiError> {
        ws::delete_api_key(&state, auth.principal(), &ws.0, &id.0, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Done::NoContent(None))
    }

    /// Rotate an API key
    ///
    /// A new secret, shown once; the old one stops working at once. Needs `rotate` on `api_key`.
    #[oai(
        path = "/v1/workspaces/:ws/api-keys/:id/rotate",
        method = "post",
        tag = "ApiTags::Workspaces",
        operation_id = "rotateApiKey"
    )]
    async fn rotate_api_key(
        &self,
        state: Data<&AppState>,
        info: Data<&RequestInfo>,
        auth: WorkspaceAuth,
        ws: Path<String>,
        id: Path<String>,
    ) -> Result<Json<CreatedApiKey>, ApiError> {
        let k =
            ws::rotate_api_key(&state, auth.principal(), &ws.0, &id.0, &origin(&info)).await.map_err(fail(&info))?;
        Ok(Json(CreatedApiKey { key: k.key.expose().to_string(), record: key_view(k.row, k.rules) }))
    }
}
