// The strict backend's memory. Its tensors carry "device addresses": a reserved range of address
// space mapped PROT_NONE for the arena's whole life, so host code that dereferences one faults,
// whenever it does so. The backend itself reaches the bytes through a private window, a second
// mapping at a fixed offset from the first (window(p) = p + offset), which it hands to the CPU
// kernels inside its own calls only. A SIGSEGV handler names the arena when the faulting
// address lies in one. Allocation: 64-byte aligned blocks, bump allocated, freed blocks reused
// by exact size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace huginn::strict {

class Arena {
 public:
  // Reserves `reserve_bytes` of device addresses and of window (nothing is committed until
  // used). Throws huginn::Error when the address space cannot be had.
  explicit Arena(size_t reserve_bytes);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // A zero-filled block of `bytes` (rounded up to 64): its device address.
  void* allocate(size_t bytes);
  // Returns a block (any thread, any time: touches no memory).
  void release(void* device, size_t bytes);
  bool contains(const void* device) const;
  // The window address of a device address of this arena.
  void* window(const void* device) const {
    return window_ + (static_cast<const char*>(device) - device_);
  }
  int id() const { return id_; }

 private:
  static size_t round(size_t bytes) { return (bytes + 63) / 64 * 64; }

  char* device_ = nullptr;  // PROT_NONE, never touched
  char* window_ = nullptr;  // read/write, the backend's own view
  size_t reserve_ = 0;
  int id_ = 0;
  std::mutex mu_;   // guards top_ and free_
  size_t top_ = 0;  // bump pointer (bytes used)
  std::map<size_t, std::vector<size_t>> free_;  // rounded size -> offsets
};

}  // namespace huginn::strict
