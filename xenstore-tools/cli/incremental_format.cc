#include "xenstore-tools/cli/incremental_format.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "common/units.h"

namespace tapmap::cli {
namespace {

constexpr size_t kMagicLength = sizeof(kIncrementalMagic) - 1;

std::string ExtentText(const IncrementalExtent& e) {
  return "[" + std::to_string(e.offset) + ", " + std::to_string(e.length) + ", " +
         (e.zero ? "zero" : "data") + "]";
}

Status ReadFully(int fd, uint64_t offset, char* buf, size_t length, const std::string& path) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(fd, buf + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno("read " + path, errno);
    if (n == 0) return Status::Corruption(path + " is truncated");
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace

uint64_t IncrementalHeader::data_bytes() const {
  uint64_t sum = 0;
  for (const auto& e : extents) sum += e.zero ? 0 : e.length;
  return sum;
}

uint64_t IncrementalHeader::zero_bytes() const {
  uint64_t sum = 0;
  for (const auto& e : extents) sum += e.zero ? e.length : 0;
  return sum;
}

Status ValidateIncremental(const IncrementalHeader& h) {
  if (h.size_bytes == 0 || h.size_bytes % kSectorSize != 0) {
    return Status::InvalidArgument("size_bytes " + std::to_string(h.size_bytes) +
                                   " is not a positive multiple of 512");
  }
  uint64_t end = 0;
  for (const auto& e : h.extents) {
    if (e.length == 0 || e.offset % kSectorSize != 0 || e.length % kSectorSize != 0 ||
        e.offset < end || e.length > h.size_bytes || e.offset > h.size_bytes - e.length) {
      return Status::InvalidArgument("extent " + ExtentText(e) +
                                     " is empty, unaligned, overlaps the one before or lies beyond " +
                                     std::to_string(h.size_bytes) + " bytes");
    }
    end = e.offset + e.length;
  }
  return Status::Ok();
}

std::string EncodeIncrementalHeader(const IncrementalHeader& h) {
  nlohmann::ordered_json doc;
  doc["from"] = h.from;
  doc["to"] = h.to;
  doc["from_size_bytes"] = h.from_size_bytes;
  doc["size_bytes"] = h.size_bytes;
  doc["created_unix_seconds"] = h.created_unix_seconds;
  doc["data_bytes"] = h.data_bytes();
  nlohmann::ordered_json extents = nlohmann::ordered_json::array();
  for (const auto& e : h.extents) extents.push_back({e.offset, e.length, e.zero ? "zero" : "data"});
  doc["extents"] = std::move(extents);
  std::string text = kIncrementalMagic + doc.dump() + "\n";
  text.resize((text.size() + kIncrementalAlignment - 1) / kIncrementalAlignment * kIncrementalAlignment, '\0');
  return text;
}

Result<IncrementalFile> ReadIncrementalFile(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Status::FromErrno("stat " + path, errno);
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  char magic[kMagicLength];
  if (file_size < kMagicLength || !ReadFully(fd, 0, magic, kMagicLength, path).ok() ||
      std::memcmp(magic, kIncrementalMagic, kMagicLength) != 0) {
    return Status::Corruption(path + " is not a tapmap incremental file (no \"tapmap-incremental 1\" line)");
  }
  // The header line: read in pieces until its newline.
  std::string line;
  uint64_t pos = kMagicLength;
  size_t newline = std::string::npos;
  while (newline == std::string::npos) {
    if (line.size() > kMaxIncrementalHeaderBytes) return Status::Corruption(path + ": header line too long");
    if (pos >= file_size) return Status::Corruption(path + " is truncated inside its header");
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(1 << 20, file_size - pos));
    std::string buf(chunk, '\0');
    TAPMAP_RETURN_IF_ERROR(ReadFully(fd, pos, buf.data(), chunk, path));
    pos += chunk;
    size_t before = line.size();
    line += buf;
    newline = line.find('\n', before);
  }
  line.resize(newline);
  auto doc = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& what) {
    return Status::Corruption(path + ": bad incremental header: " + what);
  };
  if (doc.is_discarded() || !doc.is_object()) return bad("not a JSON object");
  IncrementalFile f;
  IncrementalHeader& h = f.header;
  for (const char* key : {"from", "to"}) {
    if (!doc.contains(key) || !doc[key].is_string()) return bad(std::string("\"") + key + "\" missing");
  }
  for (const char* key : {"from_size_bytes", "size_bytes", "created_unix_seconds", "data_bytes"}) {
    if (!doc.contains(key) || !doc[key].is_number_unsigned()) return bad(std::string("\"") + key + "\" missing");
  }
  if (!doc.contains("extents") || !doc["extents"].is_array()) return bad("\"extents\" missing");
  h.from = doc["from"].get<std::string>();
  h.to = doc["to"].get<std::string>();
  h.from_size_bytes = doc["from_size_bytes"].get<uint64_t>();
  h.size_bytes = doc["size_bytes"].get<uint64_t>();
  h.created_unix_seconds = doc["created_unix_seconds"].get<uint64_t>();
  for (const auto& e : doc["extents"]) {
    if (!e.is_array() || e.size() != 3 || !e[0].is_number_unsigned() || !e[1].is_number_unsigned() ||
        !e[2].is_string() || (e[2] != "data" && e[2] != "zero")) {
      return bad("extent " + e.dump() + " is not [offset, length, \"data\"|\"zero\"]");
    }
    h.extents.push_back({e[0].get<uint64_t>(), e[1].get<uint64_t>(), e[2] == "zero"});
  }
  Status valid = ValidateIncremental(h);
  if (!valid.ok()) return bad(valid.message());
  if (doc["data_bytes"].get<uint64_t>() != h.data_bytes()) {
    return bad("data_bytes " + doc["data_bytes"].dump() + " is not the sum of the data extents (" +
               std::to_string(h.data_bytes()) + ")");
  }
  uint64_t header_end = kMagicLength + newline + 1;
  f.data_offset = (header_end + kIncrementalAlignment - 1) / kIncrementalAlignment * kIncrementalAlignment;
  if (file_size != f.data_offset + h.data_bytes()) {
    return Status::Corruption(path + " is " + std::to_string(file_size) + " bytes long, its header says " +
                              std::to_string(f.data_offset + h.data_bytes()) +
                              (file_size < f.data_offset + h.data_bytes() ? " (truncated)" : ""));
  }
  return f;
}

}  // namespace tapmap::cli
