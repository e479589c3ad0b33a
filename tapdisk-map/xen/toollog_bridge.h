// ToollogBridge: a xentoollog logger (what libxenctrl, libxengnttab and libxenevtchn
// report through) that forwards messages to a tapmap Logger at debug level instead of
// printing them on stderr. Give one to every xen*_open call.
#pragma once

#include <memory>

#include "common/logging.h"

struct xentoollog_logger;

namespace tapmap::xen {

class ToollogBridge {
 public:
  explicit ToollogBridge(Logger logger);
  ~ToollogBridge();
  ToollogBridge(const ToollogBridge&) = delete;
  ToollogBridge& operator=(const ToollogBridge&) = delete;

  // Valid while this object lives; pass to xen*_open.
  xentoollog_logger* get();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tapmap::xen
