-- Argo CD health check for SurgeModel (forecasting.pulsar.dev/v1alpha1).
--
-- Install it in the argocd-cm ConfigMap under the key
--   resource.customizations.health.forecasting.pulsar.dev_SurgeModel
-- (see docs/install.md). Argo CD runs it with the live object in `obj` (Lua 5.1).
--
--   Suspended    spec.paused is true (the operator takes no automatic action), or a version
--                that passed the gate waits for manual approval.
--   Progressing  the operator has not observed the current spec yet (observedGeneration behind
--                metadata.generation), or nothing serves yet while training / rolling out.
--   Degraded     Degraded=True (MLflow unreachable, a child the API server refused), an
--                invalid spec, a pinned version MLflow lacks, a first rollout that never got
--                ready, or nothing served because the last training failed or its version
--                failed the gate.
--   Rollout      a shadow challenger on live trial is Progressing; a champion rolled back on
--                live regression is Degraded until the next version is promoted and kept.
--   Healthy      Ready=True for the current generation: a champion is being served. A scheduled
--                retrain while the champion serves stays Healthy, so apps do not flap every 6 h.

local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or fallback
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local function result(status, message)
  hs.status = status
  hs.message = message
  return hs
end

if obj.spec ~= nil and obj.spec.paused == true then
  return result("Suspended", "spec.paused is true: no training, promotion or rollout happens")
end

if obj.status == nil then
  return result("Progressing", "waiting for the operator to reconcile this SurgeModel")
end

local generation = (obj.metadata ~= nil and obj.metadata.generation) or 0
local observed = obj.status.observedGeneration
if observed == nil or observed < generation then
  return result("Progressing", "the operator has not observed generation " .. generation ..
    " yet (observed " .. tostring(observed) .. ")")
end

local degraded = condition("Degraded")
if degraded ~= nil and degraded.status == "True" then
  return result("Degraded", describe(degraded, "Degraded"))
end

-- Stuck on a person or on a wrong spec, whatever still serves.
local promoted = condition("Promoted")
if promoted ~= nil and promoted.status ~= "True" then
  if promoted.reason == "AwaitingApproval" then
    return result("Suspended", describe(promoted, "AwaitingApproval") ..
      " (approve with the forecasting.pulsar.dev/approve-version annotation)")
  end
  if promoted.reason == "PinnedVersionMissing" then
    return result("Degraded", describe(promoted, "PinnedVersionMissing"))
  end
end

-- Live rollout (spec.rollout): a champion rolled back on live regression stays Degraded until a
-- next version is shadowed (Progressing), promoted and kept; a running shadow is Progressing.
local rollout = condition("Rollout")
if rollout ~= nil and rollout.reason == "RolledBack" then
  return result("Degraded", describe(rollout, "RolledBack"))
end
if rollout ~= nil and rollout.reason == "Shadowing" then
  return result("Progressing", "a shadow challenger is on live trial: " ..
    describe(rollout, "Shadowing"))
end

local ready = condition("Ready")
if ready == nil then
  return result("Progressing", "waiting for the Ready condition")
end
if ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  return result("Progressing", "Ready was judged for generation " .. ready.observedGeneration ..
    ", waiting for generation " .. generation)
end
if ready.status == "True" then
  return result("Healthy", describe(ready, "Ready"))
end

-- Ready is False or Unknown: a failure, or still on its way.
local training = condition("Training")
if obj.status.phase == "Failed" or ready.reason == "InvalidSpec"
    or ready.reason == "RolloutFailed" then
  return result("Degraded", describe(ready, "Failed"))
end
if promoted ~= nil and promoted.reason == "GateFailed" then
  return result("Degraded", "no champion is served and the newest version failed the gate: " ..
    describe(promoted, "GateFailed"))
end
if training ~= nil and training.status ~= "True" and training.reason == "Failed" then
  return result("Degraded", "no champion is served and the last training failed: " ..
    describe(training, "Failed"))
end
if training ~= nil and training.status == "True" then
  return result("Progressing", "training: " .. describe(training, "Training"))
end
return result("Progressing", describe(ready, "waiting for a champion to be served"))
