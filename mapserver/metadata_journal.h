// MetadataJournal: where a MetadataStore sends each write transaction's changes before
// it commits them locally, so that the durable copy of the metadata can live elsewhere
// (mapserver/doc/metadata_rados.md: RadosMetadataJournal, the journal in Ceph RADOS).
// Without a journal a MetadataStore is plain LMDB and durable by its own fsync.
#pragma once

#include <vector>

#include "common/status.h"
#include "mapserver/journal_format.h"

namespace tapmap::mapserver {

class MetadataJournal {
 public:
  virtual ~MetadataJournal() = default;

  // Makes `ops` (a transaction's changes, in order; never empty) durable as the next
  // journal record and returns only once it is. On an error the record may or may not
  // be durable; the store then does not commit locally, and the implementation must
  // make sure this server stops acknowledging changes (the local copy may now lag
  // the durable one): RadosMetadataJournal ends the process.
  virtual Status Append(const std::vector<JournalOp>& ops) = 0;

  // After a successful Append: the local commit succeeded (`status` ok) or failed.
  // A failure leaves the local copy behind the journal; the implementation must stop
  // this server as for a failed Append. Called on the thread that committed, with no
  // transaction open: the place to take checkpoints.
  virtual void Committed(const Status& status) = 0;
};

}  // namespace tapmap::mapserver
