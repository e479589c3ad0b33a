#include "mapserver/free_space.h"

#include <algorithm>
#include <optional>

namespace tapmap::mapserver {
namespace {

BlockRun Decode(std::string_view key, std::string_view value) {
  auto start = DecodeKey64(key);
  auto length = DecodeU64(value);
  if (!start || !length || *length == 0) {
    throw StatusError(Status::Corruption("free table: malformed extent"));
  }
  return BlockRun{*start, *length};
}

// The free extent with the greatest start <= block, if any.
std::optional<BlockRun> ExtentAtOrBefore(Cursor* c, uint64_t block) {
  if (c->SeekAtOrAfter(EncodeKey64(block))) {
    BlockRun run = Decode(c->key(), c->value());
    if (run.start == block) return run;
    if (!c->Prev()) return std::nullopt;
  } else if (!c->Last()) {
    return std::nullopt;
  }
  return Decode(c->key(), c->value());
}

}  // namespace

uint64_t FreeSpace::FreeBlocks(Txn* txn) { return txn->GetMetaU64(kMetaFreeBlocks, 0); }

void FreeSpace::Take(uint64_t start, uint64_t length) {
  auto cursor = txn_->OpenCursor(Table::kFree);
  auto run = ExtentAtOrBefore(cursor.get(), start);
  if (!run || run->end() < start + length || run->start > start) {
    throw StatusError(Status::Corruption("free space: blocks " + std::to_string(start) + "+" +
                                         std::to_string(length) + " are not free"));
  }
  BlockRun found = *run;
  cursor.reset();
  txn_->Delete(Table::kFree, EncodeKey64(found.start));
  if (found.start < start) {
    txn_->Put(Table::kFree, EncodeKey64(found.start), EncodeU64(start - found.start));
  }
  if (start + length < found.end()) {
    txn_->Put(Table::kFree, EncodeKey64(start + length), EncodeU64(found.end() - start - length));
  }
  uint64_t free_blocks = FreeBlocks(txn_);
  if (free_blocks < length) throw StatusError(Status::Corruption("free-blocks counter underflow"));
  txn_->PutMetaU64(kMetaFreeBlocks, free_blocks - length);
}

void FreeSpace::AddRun(BlockRun run) {
  auto cursor = txn_->OpenCursor(Table::kFree);
  std::optional<BlockRun> before = ExtentAtOrBefore(cursor.get(), run.start);
  std::optional<BlockRun> after;
  if (cursor->SeekAtOrAfter(EncodeKey64(run.start))) after = Decode(cursor->key(), cursor->value());
  cursor.reset();
  if ((before && before->end() > run.start) || (after && after->start < run.end())) {
    throw StatusError(Status::Corruption("free space: double free of blocks " +
                                         std::to_string(run.start) + "+" +
                                         std::to_string(run.length)));
  }
  BlockRun merged = run;
  if (before && before->end() == run.start) {
    merged.start = before->start;
    merged.length += before->length;
  }
  if (after && after->start == run.end()) {
    merged.length += after->length;
    txn_->Delete(Table::kFree, EncodeKey64(after->start));
  }
  txn_->Put(Table::kFree, EncodeKey64(merged.start), EncodeU64(merged.length));
  txn_->PutMetaU64(kMetaFreeBlocks, FreeBlocks(txn_) + run.length);
}

void FreeSpace::Flush() {
  if (released_.empty()) return;
  std::sort(released_.begin(), released_.end());
  for (size_t i = 1; i < released_.size(); ++i) {
    if (released_[i] == released_[i - 1]) {
      throw StatusError(Status::Corruption("free space: block " + std::to_string(released_[i]) +
                                           " released twice"));
    }
  }
  BlockRun run{released_[0], 1};
  for (size_t i = 1; i < released_.size(); ++i) {
    if (released_[i] == run.end()) {
      ++run.length;
    } else {
      AddRun(run);
      run = BlockRun{released_[i], 1};
    }
  }
  AddRun(run);
  freed_.insert(freed_.end(), released_.begin(), released_.end());
  released_.clear();
}

uint64_t FreeSpace::FindFree(Txn* txn, uint64_t hint, uint64_t count,
                             const std::set<uint64_t>& excluded, std::vector<BlockRun>* out) {
  uint64_t found = 0;
  auto take_from = [&](BlockRun run) {
    uint64_t b = run.start;
    while (b < run.end() && found < count) {
      auto ex = excluded.lower_bound(b);
      uint64_t stop = run.end();
      if (ex != excluded.end() && *ex < stop) stop = *ex;
      if (stop > b) {
        uint64_t n = std::min(stop - b, count - found);
        if (!out->empty() && out->back().end() == b) {
          out->back().length += n;
        } else {
          out->push_back(BlockRun{b, n});
        }
        found += n;
        b += n;
      }
      if (found < count && b == stop && b < run.end()) ++b;  // skip the excluded block
    }
  };
  auto cursor = txn->OpenCursor(Table::kFree);
  // Pass 1: from the extent containing or following `hint` to the end.
  std::optional<BlockRun> first = ExtentAtOrBefore(cursor.get(), hint);
  bool positioned = false;
  if (first && first->end() > hint) {
    take_from(BlockRun{hint, first->end() - hint});
    positioned = cursor->Next();
  } else {
    positioned = cursor->SeekAtOrAfter(EncodeKey64(hint));
  }
  while (positioned && found < count) {
    take_from(Decode(cursor->key(), cursor->value()));
    positioned = cursor->Next();
  }
  // Pass 2: wrap around to the blocks before `hint`.
  positioned = cursor->First();
  while (positioned && found < count) {
    BlockRun run = Decode(cursor->key(), cursor->value());
    if (run.start >= hint) break;
    take_from(BlockRun{run.start, std::min(run.end(), hint) - run.start});
    positioned = cursor->Next();
  }
  return found;
}

std::vector<BlockRun> FreeSpace::AllExtents(Txn* txn) {
  std::vector<BlockRun> runs;
  auto cursor = txn->OpenCursor(Table::kFree);
  for (bool ok = cursor->First(); ok; ok = cursor->Next()) {
    runs.push_back(Decode(cursor->key(), cursor->value()));
  }
  return runs;
}

}  // namespace tapmap::mapserver
