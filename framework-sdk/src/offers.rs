//! Matching tasks to offers: [`offer_fits`] for one question, [`OfferPool`] to pack
//! many tasks into a batch of offers.
//!
//! ```text
//! offers ─▶ OfferPool::new ─▶ place(task) ... place(task) ─▶ into_placement()
//!                              (first offer with room;        ├─ launches: offer + its tasks ─▶ handle.launch
//!                               subtracts cpus/mem/ports)     └─ unused offers              ─▶ handle.decline
//! ```
//!
//! Offers are validated with [`Resources::try_from_proto`]; an offer whose resources
//! are malformed fits nothing and ends up in [`Placement::unused`].

use strata_proto::{Resources, v1};

use crate::{SdkError, TaskBuilder};

/// The validated resources of an offer.
pub fn offer_resources(offer: &v1::Offer) -> Result<Resources, SdkError> {
    Ok(Resources::try_from_proto(&offer.resources)?)
}

/// Whether `needs` fits in `offer` (entry by entry; unreserved needs are matched
/// against unreserved resources). `false` when the offer's resources are malformed.
pub fn offer_fits(offer: &v1::Offer, needs: &Resources) -> bool {
    offer_resources(offer).is_ok_and(|have| have.contains(needs))
}

/// The ids of `offers`, for [`DriverHandle::decline`](crate::DriverHandle::decline).
pub fn offer_ids(offers: &[v1::Offer]) -> Vec<String> {
    offers.iter().map(|o| o.id.clone()).collect()
}

/// One offer and the tasks placed on it.
#[derive(Clone, Debug)]
pub struct OfferLaunch {
    /// The offer (its `agent_address` and `hostname` say where the tasks run).
    pub offer: v1::Offer,
    /// The tasks to launch on it, in placement order.
    pub tasks: Vec<v1::TaskInfo>,
}

/// The result of packing: what to launch where, and what to decline.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// Offers with at least one task placed on them.
    pub launches: Vec<OfferLaunch>,
    /// Offers nothing was placed on: decline them.
    pub unused: Vec<v1::Offer>,
}

impl Placement {
    /// The ids of the unused offers.
    pub fn unused_ids(&self) -> Vec<String> {
        offer_ids(&self.unused)
    }

    /// How many tasks were placed.
    pub fn task_count(&self) -> usize {
        self.launches.iter().map(|l| l.tasks.len()).sum()
    }
}

#[derive(Debug)]
struct Slot {
    offer: v1::Offer,
    /// What is left of the offer after the tasks placed so far.
    remaining: Resources,
    tasks: Vec<v1::TaskInfo>,
}

/// Packs tasks into a batch of offers, first fit in offer order, subtracting each
/// task's resources (ports included) from its offer as it goes.
#[derive(Debug)]
pub struct OfferPool {
    slots: Vec<Slot>,
}

impl OfferPool {
    /// A pool over `offers`. Offers with malformed resources are kept but fit nothing.
    pub fn new(offers: impl IntoIterator<Item = v1::Offer>) -> Self {
        let slots = offers
            .into_iter()
            .map(|offer| {
                let remaining = offer_resources(&offer).unwrap_or_else(|e| {
                    tracing::warn!(offer_id = %offer.id, error = %e, "offer has malformed resources; not using it");
                    Resources::new()
                });
                Slot { offer, remaining, tasks: Vec::new() }
            })
            .collect();
        OfferPool { slots }
    }

    /// How many offers the pool holds.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the pool holds no offers.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Places `task` on the first offer with room and returns that offer; `Ok(None)`
    /// when no offer has room. Fails only when the task itself is invalid (no command,
    /// NaN cpus, ...).
    pub fn place(&mut self, task: &TaskBuilder) -> Result<Option<&v1::Offer>, SdkError> {
        // Validate once, so that "invalid" is not mistaken for "does not fit".
        task.requested()?;
        for slot in &mut self.slots {
            match task.build_within(&slot.offer.agent_id, &slot.remaining) {
                Ok((info, taken)) => {
                    slot.remaining.subtract(&taken);
                    slot.tasks.push(info);
                    return Ok(Some(&slot.offer));
                }
                Err(SdkError::DoesNotFit { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// What is left of the offer `offer_id`.
    pub fn remaining(&self, offer_id: &str) -> Option<&Resources> {
        self.slots
            .iter()
            .find(|s| s.offer.id == offer_id)
            .map(|s| &s.remaining)
    }

    /// Ends packing.
    pub fn into_placement(self) -> Placement {
        let mut placement = Placement::default();
        for slot in self.slots {
            if slot.tasks.is_empty() {
                placement.unused.push(slot.offer);
            } else {
                placement.launches.push(OfferLaunch {
                    offer: slot.offer,
                    tasks: slot.tasks,
                });
            }
        }
        placement
    }
}
