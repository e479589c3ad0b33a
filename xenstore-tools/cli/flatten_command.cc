#include "xenstore-tools/cli/flatten_command.h"

#include <poll.h>

#include <chrono>
#include <memory>

#include "common/units.h"
#include "xenstore-tools/cli/control_client.h"
#include "xenstore-tools/cli/interrupt_guard.h"
#include "xenstore-tools/cli/json_fields.h"
#include "xenstore-tools/cli/transfer_progress.h"

namespace tapmap::cli {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(250);

// One control call on a fresh connection (the job outlives any one of them).
Result<nlohmann::json> Call(Invocation& inv, const nlohmann::json& request) {
  auto client = ControlClient::Connect(inv.options().Get("control"));
  if (!client.ok()) return client.status();
  return client->Call(request, std::chrono::milliseconds(inv.timeout_ms()));
}

// The job status of a reply ({"flatten": FlattenStatus}).
nlohmann::json JobOf(const nlohmann::json& reply) {
  return reply.is_object() && reply.contains("flatten") ? reply["flatten"] : nlohmann::json::object();
}

bool Finished(const nlohmann::json& job) {
  const std::string state = JsonString(job, "state");
  return state == "done" || state == "failed" || state == "cancelled";
}

// The job's error as a Status (internal if the daemon sent none).
Status JobError(const nlohmann::json& job) {
  std::string message = "flatten of " + JsonString(job, "volume") + " " + JsonString(job, "state", "ended");
  if (job.contains("error") && job["error"].is_object()) {
    auto code = StatusCodeFromName(JsonString(job["error"], "code"));
    return Status(code.value_or(StatusCode::kInternal), message + ": " + JsonString(job["error"], "message"));
  }
  return Status(StatusCode::kAborted, message);
}

std::string Describe(const nlohmann::json& job) {
  const uint64_t shared = JsonUint(job, "shared_bytes"), done = JsonUint(job, "done_bytes");
  std::string text = "flatten " + JsonString(job, "volume") + ": " + JsonString(job, "state") + ", pass " +
                     std::to_string(JsonUint(job, "pass", 1)) + ", " + FormatSize(done) + " of " +
                     FormatSize(shared) + " shared gone through, " + FormatSize(JsonUint(job, "copied_bytes")) +
                     " copied";
  const uint64_t rate = JsonUint(job, "rate");
  text += rate == 0 ? " (rate unbounded)" : " (at most " + FormatSize(rate) + "/s)";
  return text;
}

// Prints `job` as the command's result.
void PrintJob(Invocation& inv, const nlohmann::json& job) {
  Json doc;
  doc["flatten"] = Json::parse(job.dump());
  inv.PrintJson(doc, /*pretty=*/false);
  inv.Print(Describe(job) + "\n");
}

// Follows the job until it ends; a signal asks the daemon to cancel it.
Status Follow(Invocation& inv, InterruptGuard& guard, const std::string& volume, nlohmann::json job) {
  TransferProgress progress(inv, "flattening " + volume, volume);
  bool cancel_sent = false;
  while (!Finished(job)) {
    const uint64_t shared = JsonUint(job, "shared_bytes");
    const std::string state = JsonString(job, "state");
    if (state == "copying" && shared != 0) {
      progress.Report(100.0 * static_cast<double>(JsonUint(job, "done_bytes")) / static_cast<double>(shared));
    }
    pollfd pfd{guard.fd(), POLLIN, 0};
    ::poll(&pfd, 1, static_cast<int>(kPollInterval.count()));
    if (guard.interrupted() && !cancel_sent) {
      auto r = Call(inv, {{"op", "volume-flatten-cancel"}, {"volume", volume}});
      if (!r.ok() && r.status().code() != StatusCode::kNotFound) return r.status().WithContext("cancel flatten");
      cancel_sent = true;
    }
    auto r = Call(inv, {{"op", "volume-flatten-status"}, {"volume", volume}});
    if (!r.ok()) return r.status().WithContext("flatten of " + volume);
    job = JobOf(*r);
  }
  if (JsonString(job, "state") != "done") {
    Status s = JobError(job);
    if (cancel_sent) {
      s = Status::Aborted("flatten of " + volume + " cancelled by " + SignalName(guard.Take()) + " after copying " +
                          FormatSize(JsonUint(job, "copied_bytes")) +
                          " (committed); run it again to copy what is still shared");
    }
    return s;
  }
  progress.Report(100.0);
  Json doc;
  doc["flatten"] = Json::parse(job.dump());
  inv.PrintJson(doc, /*pretty=*/false);
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%.1f", job.value("elapsed_seconds", 0.0));
  inv.Print("flattened " + volume + ": " + FormatSize(JsonUint(job, "copied_bytes")) + " copied in " + seconds +
            " s; it shares no block with another volume now\n");
  return Status::Ok();
}

Status RunFlatten(Invocation& inv) {
  const std::string& volume = inv.args().at(0);
  if (volume.empty()) return inv.UsageError("the volume name is empty");
  const bool status_only = inv.options().GetBool("status"), cancel = inv.options().GetBool("cancel"),
             no_wait = inv.options().GetBool("no-wait");
  if (static_cast<int>(status_only) + static_cast<int>(cancel) + static_cast<int>(no_wait) > 1) {
    return inv.UsageError("--status, --cancel and --no-wait exclude each other");
  }
  if ((status_only || cancel) && !inv.options().Get("rate").empty()) {
    return inv.UsageError("--rate applies to starting a flatten only");
  }
  if (status_only || cancel) {
    auto r = Call(inv, {{"op", status_only ? "volume-flatten-status" : "volume-flatten-cancel"}, {"volume", volume}});
    if (!r.ok()) return r.status();
    PrintJob(inv, JobOf(*r));
    return Status::Ok();
  }
  nlohmann::json request{{"op", "volume-flatten"}, {"volume", volume}};
  if (!inv.options().Get("rate").empty()) {
    auto rate = inv.options().GetSize("rate");
    if (!rate.ok()) {
      return inv.UsageError("--rate must be a whole number of bytes per second (e.g. 64M, 0 = unbounded), not '" +
                            inv.options().Get("rate") + "'");
    }
    request["rate"] = *rate;
  }
  auto guard = InterruptGuard::Install();  // before any thread (the progress bar's)
  if (!guard.ok()) return guard.status();
  auto r = Call(inv, request);
  if (!r.ok()) return r.status();
  if (no_wait) {
    PrintJob(inv, JobOf(*r));
    return Status::Ok();
  }
  return Follow(inv, **guard, volume, JobOf(*r));
}

}  // namespace

void AddFlattenCommands(std::vector<CommandSpec>* commands) {
  commands->push_back(
      {"volume",
       "flatten",
       "NAME",
       "give NAME private copies of every block it shares (with its golden image, snapshots, clones), online",
       1,
       1,
       {{"rate", "", "copy at most this many bytes per second (default 64M; 0 = unbounded)"},
        {"no-wait", "", "start the job and return at once", true},
        {"status", "", "show the running or last flatten job of NAME on this host", true},
        {"cancel", "", "ask the running flatten of NAME to stop (what was copied is kept)", true}},
       kUsesControl,
       RunFlatten,
       /*json_lines=*/true});
}

}  // namespace tapmap::cli
