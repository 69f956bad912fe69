// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title DicomVaultAnchor
/// @notice Records Merkle batch roots of dicom-vault study versions, each once, with the time of
/// the block that recorded it. Only 32-byte hashes reach the chain: nothing here names a patient,
/// a study or the node that sent it.
/// @dev Anyone may anchor. A root only proves that some data existed by a time, so who sent it
/// does not matter to a verifier, and an open contract needs no owner key to guard or rotate.
/// Storage is one slot per root: one transaction costs the same whatever the batch size.
contract DicomVaultAnchor {
    /// @notice Block timestamp (seconds since the epoch) at which `root` was anchored; 0 if never.
    mapping(bytes32 root => uint256 timestamp) public anchoredAt;

    /// @notice Emitted once per root, in the transaction that anchors it.
    event Anchored(bytes32 indexed root, uint256 timestamp);

    /// @notice `root` was anchored before, at `timestamp`; the first anchoring stands.
    error AlreadyAnchored(bytes32 root, uint256 timestamp);

    function anchor(bytes32 root) external {
        uint256 previous = anchoredAt[root];
        if (previous != 0) revert AlreadyAnchored(root, previous);
        anchoredAt[root] = block.timestamp;
        emit Anchored(root, block.timestamp);
    }
}
