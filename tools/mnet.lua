-- Wireshark / tshark dissector for MNET v1 (a reliable byte stream over UDP).
--
--   tshark -X lua_script:tools/mnet.lua -r capture.pcap -Y mnet
--   tshark -X lua_script:tools/mnet.lua -o mnet.udp_port:9000 -i lo
--
-- Datagrams on the configured UDP port (preference "mnet.udp_port", 0 for
-- none) are MNET; on other ports a heuristic takes a datagram whose length
-- and first byte fit exactly one MNET packet type (INIT must carry the
-- "MNET" magic), or a GSO batch of such packets (see split).  Wireshark's
-- TAPA heuristic claims short UDP payloads (MNET's 4- and 32-byte packets)
-- before any Lua heuristic: set the port, or add "--disable-protocol tapa".  All integers are little-endian; every
-- packet but INIT carries a 3-byte connection tag at bytes 1..3.

local mnet = Proto("mnet", "MNET")

local types = {
  [0] = "DATA", [1] = "INIT", [2] = "COOKIE", [3] = "COOKIE-ECHO", [4] = "COOKIE-ACK",
  [5] = "SHUTDOWN", [6] = "SHUTDOWN-ACK", [7] = "SHUTDOWN-COMPLETE", [8] = "ABORT",
}

local f = mnet.fields
f.type = ProtoField.uint8("mnet.type", "Type", base.DEC, types)
f.tag = ProtoField.bytes("mnet.tag", "Connection tag")
f.magic = ProtoField.string("mnet.magic", "Magic")
f.version = ProtoField.uint8("mnet.version", "Version")
f.connector_tag = ProtoField.bytes("mnet.connector_tag", "Connector tag")
f.listener_tag = ProtoField.bytes("mnet.listener_tag", "Listener tag")
f.expiration = ProtoField.uint32("mnet.expiration", "Expiration (Unix time)")
f.hmac = ProtoField.bytes("mnet.hmac", "HMAC-SHA1")
f.seq = ProtoField.uint32("mnet.seq", "Outgoing sequence (stream end offset)")
f.ack = ProtoField.uint32("mnet.ack", "Acknowledged bytes")
f.length = ProtoField.uint16("mnet.length", "Data length")
f.payload = ProtoField.bytes("mnet.payload", "Payload")

mnet.prefs.udp_port = Pref.uint("UDP port", 0, "UDP port decoded as MNET (0: heuristic only)")

local fixed_length = { [2] = 32, [3] = 32, [4] = 4, [5] = 8, [6] = 4, [7] = 4, [8] = 4 }

-- The length of the MNET packet at offset, if one fits there.
local function packet_length(tvb, offset)
  local left = tvb:len() - offset
  if left < 4 then return nil end
  local kind = tvb(offset, 1):uint()
  local size
  if kind == 1 then
    if left < 9 or tvb(offset + 1, 4):string() ~= "MNET" then return nil end
    size = 9
  elseif kind == 0 then
    if left < 14 then return nil end
    size = 14 + tvb(offset + 12, 2):le_uint()
  else
    size = fixed_length[kind]
  end
  if size == nil or size > left then return nil end
  return size
end

-- The packets a UDP payload holds: one, or, where the capture was taken on
-- the sending host of a Linux GSO (UDP_SEGMENT) send, a batch of datagrams
-- of one size (the last may be shorter) that the kernel had not yet cut
-- apart.  Nil unless they cover the payload exactly.
local function split(tvb)
  local parts = {}
  local offset = 0
  while offset < tvb:len() do
    local size = packet_length(tvb, offset)
    if size == nil then return nil end
    if #parts > 0 and parts[1][2] < size then return nil end
    if #parts > 1 and parts[#parts][2] ~= parts[1][2] then return nil end
    parts[#parts + 1] = { offset, size }
    offset = offset + size
  end
  if #parts == 0 then return nil end
  return parts
end

local function dissect_one(tvb, tree, prefix)
  local kind = tvb(0, 1):uint()
  local root = tree:add(mnet, tvb(), prefix .. "MNET " .. types[kind])
  root:add(f.type, tvb(0, 1))
  local info = types[kind]
  if kind == 1 then
    root:add(f.magic, tvb(1, 4))
    root:add(f.version, tvb(5, 1))
    root:add(f.connector_tag, tvb(6, 3))
  elseif kind == 2 or kind == 3 then
    root:add(f.listener_tag, tvb(1, 3))
    root:add(f.connector_tag, tvb(4, 3))
    root:add(f.version, tvb(7, 1))
    root:add_le(f.expiration, tvb(8, 4))
    root:add(f.hmac, tvb(12, 20))
  else
    root:add(f.tag, tvb(1, 3))
    if kind == 0 then
      root:add_le(f.seq, tvb(4, 4))
      root:add_le(f.ack, tvb(8, 4))
      root:add_le(f.length, tvb(12, 2))
      local size = tvb(12, 2):le_uint()
      if size > 0 then root:add(f.payload, tvb(14, size)) end
      info = string.format("DATA seq=%u ack=%u len=%u", tvb(4, 4):le_uint(), tvb(8, 4):le_uint(), size)
    elseif kind == 5 then
      root:add_le(f.ack, tvb(4, 4))
    end
  end
  return info
end

function mnet.dissector(tvb, pinfo, tree)
  local parts = split(tvb)
  if parts == nil then return 0 end
  pinfo.cols.protocol = "MNET"
  if #parts == 1 then
    pinfo.cols.info = dissect_one(tvb, tree, "")
    return tvb:len()
  end
  local first, last
  for index, part in ipairs(parts) do
    local prefix = string.format("[%d/%d] ", index, #parts)
    local info = dissect_one(tvb(part[1], part[2]):tvb(), tree, prefix)
    first = first or info
    last = info
  end
  pinfo.cols.info = string.format("GSO batch of %d: %s ... %s", #parts, first, last)
  return tvb:len()
end

local function heuristic(tvb, pinfo, tree)
  if split(tvb) == nil then return false end
  mnet.dissector(tvb, pinfo, tree)
  return true
end

mnet:register_heuristic("udp", heuristic)

local registered = 0
function mnet.prefs_changed()
  local udp = DissectorTable.get("udp.port")
  if registered ~= 0 then udp:remove(registered, mnet) end
  registered = mnet.prefs.udp_port
  if registered ~= 0 then udp:add(registered, mnet) end
end
