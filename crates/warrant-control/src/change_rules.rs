//! Warrant's rules for approvals and identities beyond the schema, held on every path that
//! writes one: a grant (`GrantApproval`, a decided approval request), a new or changed identity,
//! and an import (`ImportFacts`), so that no path is a way around another's rules. An approval
//! is given by a known Human who is not the one who asked for it (nor, unless
//! `owner_may_approve`, the identity's owner), over a window the right way round and no longer
//! than `approval_max_validity_hours`, for actions the schema declares; an identity is owned by
//! a Human and has a status Warrant knows.
//!
//! Who the approver is rests on the admin caller's word unless the approver proves it: a grant
//! or a decision may carry the approver's own credential (a JWT of a configured issuer whose
//! principal is a Human), verified as a Check's credential is; the change then records the
//! credential's hash, and `require_authenticated_approver` refuses every change without one.

use super::*;

/// An approval's parts the rules read, however it arrived.
pub(super) struct ApprovalTerms<'a> {
    pub approver: &'a EntityRef,
    /// Who asked for it: required.
    pub requester: Option<&'a EntityRef>,
    /// The owner of the identity it is granted to, if it has one.
    pub subject_owner: Option<&'a EntityRef>,
    pub not_before: UnixMillis,
    pub expires_at: UnixMillis,
}

impl Rules {
    /// Separation of duties and a bounded window. `at` is put before each field's name
    /// (`approval.` for a grant, `line 3: Approval::"x": ` for an import).
    pub(super) fn approval(&self, terms: &ApprovalTerms<'_>, at: &str) -> Result<(), ControlError> {
        let approver = terms.approver;
        if approver.type_name != HUMAN_TYPE {
            return Err(invalid(
                format!("{at}approver"),
                format!(
                    "separation of duties: an approval is given by a {HUMAN_TYPE}, not by a {}",
                    approver.type_name
                ),
            ));
        }
        let requester = terms
            .requester
            .ok_or_else(|| invalid(format!("{at}requester"), "required"))?;
        if approver == requester {
            return Err(invalid(
                format!("{at}approver"),
                format!("separation of duties: the approver cannot be the requester ({approver})"),
            ));
        }
        if !self.owner_may_approve && terms.subject_owner == Some(approver) {
            return Err(invalid(
                format!("{at}approver"),
                format!(
                    "separation of duties: {approver} owns the identity it would approve for \
                     (setting owner_may_approve)"
                ),
            ));
        }
        if terms.expires_at <= terms.not_before {
            return Err(invalid(
                format!("{at}expires_at"),
                format!(
                    "must be after not_before ({})",
                    terms.not_before.to_rfc3339()
                ),
            ));
        }
        let length = terms.expires_at.0.saturating_sub(terms.not_before.0);
        if length > self.approval_max_validity_ms {
            return Err(invalid(
                format!("{at}expires_at"),
                format!(
                    "the approval would last {}, longer than the maximum of {} \
                     (setting approval_max_validity_hours)",
                    hours(length),
                    hours(self.approval_max_validity_ms)
                ),
            ));
        }
        Ok(())
    }
}

/// An identity's owner and status as Warrant requires them: an owner that is a Human, and a
/// status among `IDENTITY_STATUSES` when it has one.
pub(super) fn identity_rules(identity: &Identity, at: &str) -> Result<(), ControlError> {
    let owner = identity.owner.as_ref().ok_or_else(|| {
        invalid(
            format!("{at}owner"),
            "required: an identity is owned by a Human",
        )
    })?;
    if owner.entity.type_name != HUMAN_TYPE {
        return Err(invalid(
            format!("{at}owner"),
            format!(
                "an identity is owned by a {HUMAN_TYPE}, not by a {}",
                owner.entity.type_name
            ),
        ));
    }
    if let Some(status) = &identity.status
        && !identities::IDENTITY_STATUSES.contains(&status.as_str())
    {
        return Err(invalid(
            format!("{at}status"),
            format!(
                "{status:?} is not one of {}",
                identities::IDENTITY_STATUSES.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The human who approves (or rejects), and how Warrant knows it is them.
#[derive(Debug, Clone)]
pub struct Approver {
    pub entity: EntityRef,
    /// The SHA-256 of the credential the approver presented (`sha256:...`); `None`: the approver
    /// was only named by the admin caller (asserted).
    pub credential: Option<String>,
}

impl Control {
    /// The approver a change names (`field`), or proves with `credential`: a credential must
    /// verify, name a Human, and agree with the name given (if any). Without one, the name is
    /// taken as asserted unless `require_authenticated_approver`.
    pub(super) fn approver(
        &self,
        named: Option<&EntityRef>,
        credential: Option<&str>,
        field: &str,
    ) -> Result<Approver, ControlError> {
        // (An empty reference is no name.)
        let named = named.filter(|named| !(named.type_name.is_empty() && named.id.is_empty()));
        let Some(token) = credential.filter(|token| !token.is_empty()) else {
            if self.rules.require_authenticated_approver {
                return Err(ControlError::Refused(format!(
                    "{field}: the approver must present their credential \
                     (setting require_authenticated_approver)"
                )));
            }
            return Ok(Approver {
                entity: required_ref(named, field)?,
                credential: None,
            });
        };
        let credentials = self.credentials().ok_or_else(|| {
            ControlError::Refused(
                warrant_domain::Reason::CredentialUnknownIssuer
                    .as_str()
                    .into(),
            )
        })?;
        let evidence = credentials
            .verify(token, self.clock.now())
            .map_err(|reason| ControlError::Refused(reason.as_str().into()))?;
        let proven = evidence.principal;
        if proven.type_name != HUMAN_TYPE {
            return Err(invalid(
                "approver_credential",
                format!("names {proven}; an approver is a {HUMAN_TYPE}"),
            ));
        }
        if let Some(named) = named
            && *named != proven
        {
            return Err(invalid(
                field,
                format!("{named} is named, but the credential is {proven}'s"),
            ));
        }
        Ok(Approver {
            entity: proven,
            credential: Some(evidence.token_sha256),
        })
    }
}
