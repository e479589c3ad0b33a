#include "rados/rados_cluster.h"

#include <cerrno>
#include <cstring>

namespace tapmap::rados {

Status RadosStatus(int r, std::string_view context) {
  int err = r < 0 ? -r : r;
  std::string message = std::string(context) + ": " + std::strerror(err);
  switch (err) {
    case ETIMEDOUT:
    case ECONNREFUSED:
    case ENOTCONN:
    case ESHUTDOWN:
      return Status::Unavailable(message + " (ceph cluster unreachable)");
    case ENOENT:
      return Status::NotFound(message);
    case EEXIST:
      return Status::AlreadyExists(message);
    case ENOSPC:
    case EDQUOT:
      return Status::NoSpace(message);
    default:
      return Status::IoError(message);
  }
}

Result<std::unique_ptr<RadosCluster>> RadosCluster::Connect(const RadosOptions& options) {
  if (options.pool.empty()) return Status::InvalidArgument("no ceph pool given");
  if (options.timeout_seconds == 0) return Status::InvalidArgument("ceph client timeout must be >= 1 s");
  std::unique_ptr<RadosCluster> cluster(new RadosCluster(options));
  librados::Rados& rados = cluster->rados_;
  const std::string id = options.client_id.empty() ? "admin" : options.client_id;
  if (int r = rados.init(id.c_str()); r < 0) return RadosStatus(r, "librados init (client." + id + ")");
  if (int r = rados.conf_read_file(options.conf.empty() ? nullptr : options.conf.c_str()); r < 0) {
    return Status::InvalidArgument("cannot read ceph configuration " +
                                   (options.conf.empty() ? std::string("(default search path)") : options.conf) +
                                   ": " + std::strerror(-r));
  }
  const std::string timeout = std::to_string(options.timeout_seconds);
  for (const char* name : {"client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout"}) {
    if (int r = rados.conf_set(name, timeout.c_str()); r < 0) return RadosStatus(r, std::string("set ") + name);
  }
  if (int r = rados.connect(); r < 0) {
    return RadosStatus(r, "connect to ceph cluster" + (options.conf.empty() ? "" : " of " + options.conf) +
                              " (timeout " + timeout + " s)");
  }
  cluster->connected_ = true;
  if (int r = rados.ioctx_create(options.pool.c_str(), cluster->ioctx_); r < 0) {
    if (r == -ENOENT) return Status::NotFound("ceph pool '" + options.pool + "' does not exist");
    return RadosStatus(r, "open ceph pool '" + options.pool + "'");
  }
  return cluster;
}

RadosCluster::~RadosCluster() {
  ioctx_.close();
  if (connected_) rados_.shutdown();
}

Result<std::vector<uint8_t>> RadosCluster::ReadObject(const std::string& oid, size_t max_bytes) {
  librados::bufferlist bl;
  int r = ioctx_.read(oid, bl, max_bytes, 0);
  if (r < 0) return RadosStatus(r, "read object " + oid);
  std::vector<uint8_t> data(bl.length());
  if (!data.empty()) bl.begin().copy(bl.length(), reinterpret_cast<char*>(data.data()));
  return data;
}

Status RadosCluster::WriteObject(const std::string& oid, const std::vector<uint8_t>& data, bool exclusive) {
  librados::bufferlist bl;
  bl.append(reinterpret_cast<const char*>(data.data()), data.size());
  librados::ObjectWriteOperation op;
  if (exclusive) op.create(true);
  op.write_full(bl);  // the operation's write_full copies; bl is not reused anyway
  int r = ioctx_.operate(oid, &op);
  if (r < 0) return RadosStatus(r, std::string(exclusive ? "create" : "write") + " object " + oid);
  return Status::Ok();
}

}  // namespace tapmap::rados
